"""Chat exports: ChatGPT and Claude ``conversations.json``.

One memory per message, its text prefixed by the speaker (``user: ...``, ``assistant: ...``);
the conversation's title is the ``title``, the neighbouring messages (one before, one after,
truncated) and the title make the ``context``, and the message's own time is ``observed_at``.
The locator is ``<conversation id>#<message id>`` (message ids survive re-exports; the
message's index along the conversation is in ``meta``); a long message is chunked
(``...#<message id>@2``).

ChatGPT stores a conversation as a tree (``mapping`` of nodes, each with ``parent`` and
``children``): edits and regenerations are branches. The branch shown in the app is the path
from ``current_node`` up to the root, and that is what is ingested. Hidden system messages, tool
output and reasoning summaries are left out (``roles`` option to change that).

Exports are streamed conversation by conversation (memory bounded by the largest one).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from memctl.ingest.chunk import MAX_CHUNK_CHARS, split_text, truncate
from memctl.ingest.hookspecs import hookimpl
from memctl.ingest.sources import Skip, SourceError, SourceSpec, int_option, parse_time

from . import _jsonstream as js

DEFAULT_MAX_CONVERSATION = 256 * 1024 * 1024
NEIGHBOUR_CHARS = 300
DEFAULT_ROLES = ("user", "assistant")
_SKIP_CONTENT_TYPES = frozenset(
    {
        "thoughts",
        "reasoning_recap",
        "user_editable_context",
        "system_error",
        "model_editable_context",
    }
)

OPTIONS = {
    "roles": "comma-separated speakers to ingest (default: user,assistant; also: system,tool)",
    "max_chars": f"largest chunk, in characters (default {MAX_CHUNK_CHARS})",
    "max_conversation_bytes": "largest conversation read, in bytes (default 256 MiB)",
}


def _roles(options: Mapping[str, Any]) -> frozenset[str]:
    raw = options.get("roles")
    if not raw:
        return frozenset(DEFAULT_ROLES)
    return frozenset(r.strip().lower() for r in str(raw).split(",") if r.strip())


def _conversations(path: Path, options: Mapping[str, Any]) -> Iterator[tuple[int, int, Any]]:
    max_bytes = int_option(
        options, "max_conversation_bytes", DEFAULT_MAX_CONVERSATION, 1024, 1 << 32
    )
    with open(path, "rb") as f:
        first, offset = js.first_byte(f)
        if first != b"[":
            raise SourceError(
                "not a chat export: expected a JSON list of conversations",
                position=f"byte {offset}",
            )
        yield from js.iter_array(f, max_element_bytes=max_bytes, path=path)


# ---------------------------------------------------------------------------------------------
# Turning messages into items


def _message_items(
    conv_id: str,
    title: str | None,
    messages: list[dict[str, Any]],
    source_name: str,
    max_chars: int,
) -> Iterator[dict[str, Any]]:
    """``messages``: dicts with ``id``, ``role``, ``text``, ``time`` along one conversation."""
    for index, message in enumerate(messages):
        before = messages[index - 1] if index > 0 else None
        after = messages[index + 1] if index + 1 < len(messages) else None
        context_bits = [f"Conversation: {title}" if title else "Conversation"]
        if before:
            context_bits.append(
                f"before: {before['role']}: {truncate(before['text'], NEIGHBOUR_CHARS)}"
            )
        if after:
            context_bits.append(
                f"after: {after['role']}: {truncate(after['text'], NEIGHBOUR_CHARS)}"
            )
        mid = message["id"] or str(index)
        base = f"{conv_id}#{mid}"
        meta = {"conversation": conv_id, "role": message["role"], "index": index}
        if message.get("model"):
            meta["model"] = str(message["model"])[:100]
        for part, chunk in enumerate(split_text(message["text"], max_chars), 1):
            yield {
                "text": f"{message['role']}: {chunk}",
                "title": title,
                "tags": [source_name],
                "locator": base if part == 1 else f"{base}@{part}",
                "observed_at": message["time"],
                "kind": "chat",
                "context": "\n".join(context_bits),
                "meta": meta,
            }


def _iter_chat(
    path: Path,
    options: Mapping[str, Any],
    source_name: str,
    extract: Any,
) -> Iterator[dict[str, Any] | Skip]:
    max_chars = int_option(options, "max_chars", MAX_CHUNK_CHARS, 200, 100_000)
    roles = _roles(options)
    seen: set[str] = set()
    understood = 0
    label = {"chatgpt": "ChatGPT", "claude": "Claude"}.get(source_name, source_name)
    for index, offset, conv in _conversations(path, options):
        where = f"conversation {index}, byte {offset}"
        if isinstance(conv, js.Malformed):
            yield Skip(conv.reason, where)
            continue
        if not isinstance(conv, dict):
            yield Skip("conversation is not a JSON object", where)
            continue
        try:
            result = extract(conv, roles, index)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            yield Skip(f"conversation not understood ({type(exc).__name__})", where)
            continue
        if isinstance(result, str):
            if not understood:
                # The first conversation has the wrong shape: this is not such an export.
                raise SourceError(f"{result}: not a {label} export", position=where)
            yield Skip(result, where)
            continue
        understood += 1
        conv_id, title, messages = result
        if conv_id in seen:
            yield Skip("conversation id repeated in this file", where)
            continue
        seen.add(conv_id)
        yield from _message_items(conv_id, title, messages, source_name, max_chars)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


# ---------------------------------------------------------------------------------------------
# ChatGPT


def _chatgpt_text(content: Any) -> str | None:
    if not isinstance(content, dict):
        return None
    if content.get("content_type") in _SKIP_CONTENT_TYPES:
        return None
    parts = content.get("parts")
    if isinstance(parts, list):
        texts = []
        for p in parts:
            if isinstance(p, str):
                texts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                texts.append(p["text"])
        text = "\n\n".join(t for t in texts if t.strip())
        return text or None
    return _str(content.get("text"))


def chatgpt_branch(mapping: Mapping[str, Any], current: Any) -> list[Mapping[str, Any]]:
    """The nodes from the root down to ``current`` (the branch the app shows).

    If ``current`` is missing, the leaf with the latest message is used. Cycles are cut.
    """
    if not isinstance(current, str) or current not in mapping:
        best: tuple[float, str] | None = None
        for leaf_id, leaf in mapping.items():
            if not isinstance(leaf, dict) or leaf.get("children"):
                continue
            t = _dict(leaf.get("message")).get("create_time")
            key = (float(t) if isinstance(t, int | float) else 0.0, str(leaf_id))
            if best is None or key > best:
                best = key
        if best is None:
            return []
        current = best[1]
    branch: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    node_id: Any = current
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        node = mapping[node_id]
        if not isinstance(node, dict):
            break
        branch.append(node)
        node_id = node.get("parent")
    branch.reverse()
    return branch


def _chatgpt_extract(
    conv: dict[str, Any], roles: frozenset[str], index: int
) -> tuple[str, str | None, list[dict[str, Any]]] | str:
    mapping = conv.get("mapping")
    if not isinstance(mapping, dict):
        return "not a ChatGPT conversation (no mapping)"
    conv_id = _str(conv.get("conversation_id")) or _str(conv.get("id")) or f"conversation-{index}"
    title = _str(conv.get("title"))
    conv_time = parse_time(conv.get("create_time"))
    messages = []
    for node in chatgpt_branch(mapping, conv.get("current_node")):
        msg = node.get("message")
        if not isinstance(msg, dict):
            continue
        role = str(_dict(msg.get("author")).get("role") or "unknown").lower()
        if role not in roles:
            continue
        metadata = _dict(msg.get("metadata"))
        if metadata.get("is_visually_hidden_from_conversation"):
            continue
        text = _chatgpt_text(msg.get("content"))
        if not text:
            continue
        messages.append(
            {
                "id": _str(msg.get("id")) or _str(node.get("id")),
                "role": role,
                "text": text,
                "time": parse_time(msg.get("create_time")) or conv_time,
                "model": metadata.get("model_slug"),
            }
        )
    return conv_id, title, messages


def detect_chatgpt(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if (
        start == b"["
        and b'"mapping"' in head
        and (b'"current_node"' in head or b'"author"' in head or b'"create_time"' in head)
    ):
        return 95
    if start == b"[" and path.name == "conversations.json" and b'"chat_messages"' not in head:
        return 50
    return 0


def iter_chatgpt(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    yield from _iter_chat(path, options, "chatgpt", _chatgpt_extract)


# ---------------------------------------------------------------------------------------------
# Claude


def _claude_text(message: dict[str, Any]) -> str | None:
    content = message.get("content")
    if isinstance(content, list):
        texts = [
            c["text"]
            for c in content
            if isinstance(c, dict)
            and c.get("type") in (None, "text")
            and isinstance(c.get("text"), str)
        ]
        text = "\n\n".join(t for t in texts if t.strip())
        if text:
            return text
    return _str(message.get("text"))


def _claude_extract(
    conv: dict[str, Any], roles: frozenset[str], index: int
) -> tuple[str, str | None, list[dict[str, Any]]] | str:
    chat = conv.get("chat_messages")
    if not isinstance(chat, list):
        return "not a Claude conversation (no chat_messages)"
    conv_id = _str(conv.get("uuid")) or f"conversation-{index}"
    title = _str(conv.get("name"))
    conv_time = parse_time(conv.get("created_at"))
    messages = []
    for message in chat:
        if not isinstance(message, dict):
            continue
        sender = str(message.get("sender") or "unknown").lower()
        role = {"human": "user"}.get(sender, sender)
        if role not in roles:
            continue
        text = _claude_text(message)
        if not text:
            continue
        messages.append(
            {
                "id": _str(message.get("uuid")),
                "role": role,
                "text": text,
                "time": parse_time(message.get("created_at")) or conv_time,
            }
        )
    return conv_id, title, messages


def detect_claude(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start == b"[" and b'"chat_messages"' in head:
        return 95
    if start == b"[" and path.name == "conversations.json" and b'"mapping"' not in head:
        return 45
    return 0


def iter_claude(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    yield from _iter_chat(path, options, "claude", _claude_extract)


CHATGPT = SourceSpec(
    name="chatgpt",
    description="ChatGPT export conversations.json: one memory per message of the shown branch",
    detect=detect_chatgpt,
    iter_items=iter_chatgpt,
    kind="chat",
    options=OPTIONS,
)
CLAUDE = SourceSpec(
    name="claude",
    description="Claude export conversations.json: one memory per message",
    detect=detect_claude,
    iter_items=iter_claude,
    kind="chat",
    options=OPTIONS,
)


@hookimpl
def memctl_sources() -> list[SourceSpec]:
    return [CHATGPT, CLAUDE]
