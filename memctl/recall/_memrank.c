/*
** memctl_bm25: FTS5's bm25 with the document frequencies given by the caller.
**
**   memctl_bm25(records_fts, w_1, ..., w_ncol, df_1, ..., df_nphrase)
**
** The same score as FTS5's built-in bm25() (k1 = 1.2, b = 0.75, the same IDF clamp, the same
** average document length, the same per-phrase frequencies weighted by column), with two
** differences that make memctl's pruned keyword search cheap (memctl/recall/keyword.py):
**
**   - the IDF of phrase i is computed from df_i, the number of rows holding it, which the
**     caller knows (it caches them). The built-in counts every phrase's rows on each query:
**     for a common term that is a walk over most of the index.
**   - a phrase whose df is NULL or negative is not scored. A query may then repeat a phrase
**     only to shape the set of rows it matches, as in "(R) AND ((C) OR (R))": the rows that
**     hold a rare term, each scored for every term it holds.
**
** Returns -score, like bm25(), so ORDER BY ascending is best first.
**
**   memctl_holds(records_fts, first, last)
**
** 1 when the row holds a phrase numbered first <= i < last (in the order of the MATCH
** expression), else 0: which rows of "(R) AND ((C) OR (R))" hold a term of C.
**
**   memctl_token(text, tokenizer, arg_1, ..., arg_n)
**
** The one token FTS5's tokenizer (created with those arguments, as in a table's tokenize=
** option) makes of text in a query, or NULL when it makes none or several. The token is what
** the index stores, so an fts5vocab table can be asked how many rows hold it: a lookup in the
** index instead of a walk over every row that holds the term (memctl/recall/rank.py).
*/
#include <math.h>
#include <string.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

typedef struct RankData RankData;
struct RankData {
  int nPhrase;
  double avgdl;
  double *aIDF;  /* nPhrase entries; negative: the phrase is not scored */
  double *aFreq; /* nPhrase entries, reset for every row */
};

static int rankData(
  const Fts5ExtensionApi *pApi, Fts5Context *pFts, int nVal, sqlite3_value **apVal,
  RankData **ppOut, const char **pzErr
){
  RankData *p = (RankData *)pApi->xGetAuxdata(pFts, 0);
  sqlite3_int64 nRow = 0, nToken = 0;
  int nPhrase, nCol, i, rc;
  if( p ){
    *ppOut = p;
    return SQLITE_OK;
  }
  nPhrase = pApi->xPhraseCount(pFts);
  nCol = pApi->xColumnCount(pFts);
  if( nVal!=nCol+nPhrase ){
    *pzErr = "memctl_bm25: expected one weight per column and one df per phrase";
    return SQLITE_ERROR;
  }
  rc = pApi->xRowCount(pFts, &nRow);
  if( rc==SQLITE_OK ) rc = pApi->xColumnTotalSize(pFts, -1, &nToken);
  if( rc!=SQLITE_OK ) return rc;
  p = (RankData *)sqlite3_malloc64(sizeof(RankData) + sizeof(double) * 2 * (nPhrase + 1));
  if( p==0 ) return SQLITE_NOMEM;
  memset(p, 0, sizeof(RankData) + sizeof(double) * 2 * (nPhrase + 1));
  p->nPhrase = nPhrase;
  p->aIDF = (double *)&p[1];
  p->aFreq = &p->aIDF[nPhrase];
  p->avgdl = nRow>0 ? (double)nToken / (double)nRow : 1.0;
  for(i=0; i<nPhrase; i++){
    sqlite3_value *v = apVal[nCol + i];
    if( sqlite3_value_type(v)==SQLITE_NULL || sqlite3_value_int64(v)<0 ){
      p->aIDF[i] = -1.0;
    }else{
      /* as fts5Bm25GetData: log((N - n + 0.5) / (n + 0.5)), at least 1e-6 */
      sqlite3_int64 nHit = sqlite3_value_int64(v);
      double idf = log((nRow - nHit + 0.5) / (nHit + 0.5));
      if( idf<=0.0 ) idf = 1e-6;
      p->aIDF[i] = idf;
    }
  }
  rc = pApi->xSetAuxdata(pFts, p, sqlite3_free);
  if( rc!=SQLITE_OK ) return rc; /* xSetAuxdata freed p */
  *ppOut = p;
  return SQLITE_OK;
}

static void memctlBm25(
  const Fts5ExtensionApi *pApi, Fts5Context *pFts, sqlite3_context *pCtx,
  int nVal, sqlite3_value **apVal
){
  const double k1 = 1.2;
  const double b = 0.75;
  const char *zErr = 0;
  RankData *p = 0;
  double score = 0.0, D = 0.0;
  int rc, nInst = 0, nCol, i;
  rc = rankData(pApi, pFts, nVal, apVal, &p, &zErr);
  if( rc!=SQLITE_OK ){
    if( zErr ) sqlite3_result_error(pCtx, zErr, -1);
    else sqlite3_result_error_code(pCtx, rc);
    return;
  }
  nCol = nVal - p->nPhrase;
  memset(p->aFreq, 0, sizeof(double) * p->nPhrase);
  rc = pApi->xInstCount(pFts, &nInst);
  for(i=0; rc==SQLITE_OK && i<nInst; i++){
    int ip, ic, io;
    rc = pApi->xInst(pFts, i, &ip, &ic, &io);
    if( rc==SQLITE_OK && ic<nCol ) p->aFreq[ip] += sqlite3_value_double(apVal[ic]);
  }
  if( rc==SQLITE_OK ){
    int nTok = 0;
    rc = pApi->xColumnSize(pFts, -1, &nTok);
    D = (double)nTok;
  }
  if( rc!=SQLITE_OK ){
    sqlite3_result_error_code(pCtx, rc);
    return;
  }
  for(i=0; i<p->nPhrase; i++){
    if( p->aIDF[i]<0.0 ) continue;
    score += p->aIDF[i] * (
        (p->aFreq[i] * (k1 + 1.0)) / (p->aFreq[i] + k1 * (1 - b + b * D / p->avgdl))
    );
  }
  sqlite3_result_double(pCtx, -1.0 * score);
}

static void memctlHolds(
  const Fts5ExtensionApi *pApi, Fts5Context *pFts, sqlite3_context *pCtx,
  int nVal, sqlite3_value **apVal
){
  int first, last, i, rc, nInst = 0, holds = 0;
  if( nVal!=2 ){
    sqlite3_result_error(pCtx, "memctl_holds: expected the first and last phrase", -1);
    return;
  }
  first = sqlite3_value_int(apVal[0]);
  last = sqlite3_value_int(apVal[1]);
  rc = pApi->xInstCount(pFts, &nInst);
  for(i=0; rc==SQLITE_OK && i<nInst && !holds; i++){
    int ip, ic, io;
    rc = pApi->xInst(pFts, i, &ip, &ic, &io);
    if( rc==SQLITE_OK && ip>=first && ip<last ) holds = 1;
  }
  if( rc!=SQLITE_OK ){
    sqlite3_result_error_code(pCtx, rc);
    return;
  }
  sqlite3_result_int(pCtx, holds);
}

#define MEMCTL_TOKEN_MAX_ARGS 16

typedef struct TokenOut TokenOut;
struct TokenOut {
  int nToken;  /* tokens seen, colocated ones (synonyms) included */
  char *z;     /* the first one */
  int n;
};

static int tokenOutCb(
  void *pCtx, int tflags, const char *pToken, int nToken, int iStart, int iEnd
){
  TokenOut *p = (TokenOut *)pCtx;
  (void)tflags; (void)iStart; (void)iEnd;
  if( ++p->nToken==1 ){
    p->z = (char *)sqlite3_malloc64(nToken + 1);
    if( p->z==0 ) return SQLITE_NOMEM;
    memcpy(p->z, pToken, nToken);
    p->z[nToken] = 0;
    p->n = nToken;
  }
  return SQLITE_OK;
}

static void memctlToken(sqlite3_context *pCtx, int nArg, sqlite3_value **apArg){
  fts5_api *pApi = (fts5_api *)sqlite3_user_data(pCtx);
  const char *azArg[MEMCTL_TOKEN_MAX_ARGS];
  const char *zText, *zName;
  fts5_tokenizer tok;
  Fts5Tokenizer *pTok = 0;
  void *pUser = 0;
  TokenOut out = {0, 0, 0};
  int i, rc;
  if( nArg<2 || nArg-2>MEMCTL_TOKEN_MAX_ARGS ){
    sqlite3_result_error(pCtx, "memctl_token: expected text, a tokenizer and its arguments", -1);
    return;
  }
  zText = (const char *)sqlite3_value_text(apArg[0]);
  zName = (const char *)sqlite3_value_text(apArg[1]);
  for(i=2; i<nArg; i++) azArg[i-2] = (const char *)sqlite3_value_text(apArg[i]);
  if( zText==0 || zName==0 ){
    sqlite3_result_null(pCtx);
    return;
  }
  rc = pApi->xFindTokenizer(pApi, zName, &pUser, &tok);
  if( rc!=SQLITE_OK ){
    sqlite3_result_error(pCtx, "memctl_token: no such tokenizer", -1);
    return;
  }
  rc = tok.xCreate(pUser, azArg, nArg - 2, &pTok);
  if( rc!=SQLITE_OK ){
    sqlite3_result_error(pCtx, "memctl_token: the tokenizer refused its arguments", -1);
    return;
  }
  rc = tok.xTokenize(
      pTok, (void *)&out, FTS5_TOKENIZE_QUERY, zText, sqlite3_value_bytes(apArg[0]), tokenOutCb
  );
  tok.xDelete(pTok);
  if( rc!=SQLITE_OK ){
    sqlite3_result_error_code(pCtx, rc);
  }else if( out.nToken==1 ){
    sqlite3_result_text(pCtx, out.z, out.n, sqlite3_free);
    return;
  }else{
    sqlite3_result_null(pCtx);
  }
  sqlite3_free(out.z);
}

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_extension_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi){
  fts5_api *pFts5 = 0;
  sqlite3_stmt *pStmt = 0;
  int rc;
  SQLITE_EXTENSION_INIT2(pApi);
  rc = sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &pStmt, 0);
  if( rc==SQLITE_OK ){
    sqlite3_bind_pointer(pStmt, 1, (void *)&pFts5, "fts5_api_ptr", 0);
    sqlite3_step(pStmt);
    rc = sqlite3_finalize(pStmt);
  }
  if( rc!=SQLITE_OK || pFts5==0 || pFts5->iVersion<2 ){
    if( pzErrMsg ) *pzErrMsg = sqlite3_mprintf("memctl_bm25: FTS5 is not available");
    return SQLITE_ERROR;
  }
  rc = pFts5->xCreateFunction(pFts5, "memctl_bm25", 0, memctlBm25, 0);
  if( rc==SQLITE_OK ) rc = pFts5->xCreateFunction(pFts5, "memctl_holds", 0, memctlHolds, 0);
  if( rc==SQLITE_OK ){
    rc = sqlite3_create_function(
        db, "memctl_token", -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
        (void *)pFts5, memctlToken, 0, 0
    );
  }
  return rc;
}
