/* diskshelf: private header of the HTTP(S) transport (backends/http/).
 *
 *   http.c    the layer: open (probe size and validators), status, close
 *   chunks.c  reads: chunk table, single-flight fetches, read-ahead,
 *             worker threads, the storer thread that writes fetched
 *             chunks to the disk cache, and a small memory cache
 *   fetch.c   one range GET with every check on the response
 *   retry.c   retrying a range GET with back-off within a time budget
 *   handle.c  configuring curl handles; secrets; URL redaction
 *   headers.c response headers, Content-Range, the checks on a response
 *
 * Reads work in chunks of DISK_CACHE_CHUNK bytes.  A missing chunk is
 * fetched once (concurrent readers wait for the same fetch), by a pool
 * of worker threads each holding one curl handle (one kept-alive
 * connection), started lazily and leaving after an idle minute.
 *
 * Thread model: every layer callback may run on many threads.  `lock`
 * protects the chunk table, the job queue, the read-ahead state and the
 * worker count; it is never held while fetching or doing disk I/O.
 */
#ifndef DISKSHELF_HTTP_INTERNAL_H
#define DISKSHELF_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "diskcache.h"
#include "layer.h"

#define HTTP_CHUNK DISK_CACHE_CHUNK
#define HTTP_BUCKETS 256
#define HTTP_RA_MIN 4             /* chunks of read-ahead at first */
#define HTTP_RA_MAX 32            /* chunks of read-ahead at most */
#define HTTP_SEQ_SLACK (1024 * 1024) /* "sequential" tolerance, bytes */
#define HTTP_MEM_CHUNKS 64        /* unstored chunks kept in memory */
#define HTTP_FREE_BUFS 40          /* chunk buffers kept for reuse */
#define HTTP_IDLE_HANDLES 8         /* readers' curl handles kept */
#define HTTP_RANDOM_AFTER 8         /* non-sequential misses: random */
#define HTTP_DIRECT_MAX (128 * 1024)/* random misses fetched directly */
#define HTTP_FILL_WORKERS 1         /* workers busy with fill at once */
#define HTTP_STORE_MAX 64           /* fetched chunks waiting for disk */
#define HTTP_STORE_WAIT_S 2         /* then wait this long before skipping */
#define HTTP_MAX_SIZE DISK_CACHE_MAX_SIZE /* larger claimed sizes refused */
#define HTTP_DEFAULT_CONNECTIONS 4
#define HTTP_DEFAULT_TIMEOUT 30.0
#define HTTP_DEFAULT_RETRY_TIME 60.0
#define HTTP_DEFAULT_REVALIDATE 30.0  /* seconds between checks at open */

enum chunk_state { CHUNK_FETCHING, CHUNK_READY, CHUNK_FAILED };
enum fetch_kind { FETCH_FOREGROUND, FETCH_READAHEAD, FETCH_FILL };

/* One chunk being fetched or held in memory. */
struct chunk
{
  uint64_t index;
  enum chunk_state state;      /* protected by lock */
  unsigned refs;               /* table + readers; protected by lock */
  bool in_table;               /* protected by lock */
  bool queued;                 /* in the job queue; protected by lock */
  bool stored;                 /* kept by the disk cache */
  bool fill;                   /* background fill, not read-ahead */
  char *buf;                   /* HTTP_CHUNK bytes (len used); taken
                                  by the worker that fetches it */
  size_t len;
  int err;                     /* negative errno when FAILED */
  char *message;               /* the error message when FAILED */
  struct chunk *hnext;         /* hash chain; protected by lock */
  struct chunk *qnext;         /* job queue; protected by lock */
  struct chunk *lprev, *lnext; /* memory LRU; protected by lock */
};

/* A FIFO of queued chunks, linked through chunk.qnext. */
struct chunk_queue
{
  struct chunk *head, *tail;
};

/* What every request needs; fixed after open, read by all threads. */
struct http_request_config
{
  char *url;                   /* final URL after redirects at open */
  char *display;               /* URL with credentials redacted */
  char *entry_name;            /* the entry, for log lines */
  char *user, *password;       /* NULL when unset */
  char *cookie;                /* "a=b; c=d" or NULL */
  char *user_agent;
  bool credentials_on_redirect;/* send-credentials-on-redirect = yes */
  char *ca_file, *ca_path;
  bool verify;
  long timeout_s;
  double retry_time;
  struct curl_slist *headers;  /* extra headers (+ If-Range for GETs) */
  uint64_t size;
  char *etag;                  /* validators from the first response */
  char *last_modified;
};

struct http_layer
{
  struct layer layer;
  struct http_request_config rc;
  struct disk_cache_object *dc;     /* NULL without a disk cache */
  uint64_t nchunks;

  pthread_mutex_t lock;
  pthread_cond_t chunk_cond;        /* a chunk finished */
  pthread_cond_t work_cond;         /* jobs queued, or closing */
  struct chunk *table[HTTP_BUCKETS];/* protected by lock */
  struct chunk_queue queue;         /* reads, read-ahead; lock */
  struct chunk_queue fill_queue;    /* background fill; lock */
  unsigned fill_active;             /* fills being fetched; lock */
  struct chunk_queue store_queue;   /* fetched, to write; lock */
  unsigned nstore;                  /* chunks in store_queue; lock */
  unsigned storers;                 /* storer threads (0 or 1); lock */
  pthread_cond_t store_cond;        /* store_queue grew, or closing */
  pthread_cond_t store_space;       /* store_queue shrank */
  struct chunk *lru_head, *lru_tail;/* protected by lock */
  unsigned nmem;                    /* chunks in the LRU; protected by lock */
  char *free_bufs;                  /* reusable buffers; protected by lock */
  CURL *handles[HTTP_IDLE_HANDLES]; /* readers' idle handles; lock */
  unsigned nhandles;                /* protected by lock */
  unsigned nfree_bufs;              /* protected by lock */
  unsigned workers, idle, max_workers; /* protected by lock */
  unsigned inflight;                /* queued + fetching, fill excluded;
                                       protected by lock */
  unsigned pending;                 /* every queued + fetching chunk;
                                       protected by lock */
  bool closing;                     /* protected by lock */

  /* Read-ahead of one sequential stream; protected by lock. */
  uint64_t ra_end;                  /* where the last read ended */
  unsigned random_misses;           /* non-sequential reads in a row */
  uint64_t ra_next;                 /* first chunk not yet scheduled */
  unsigned ra_window;               /* 0 = not sequential */

  pthread_mutex_t revalidate_lock;  /* one check at a time */
  double validated_at;              /* last check; revalidate_lock */
  double revalidate_s;              /* `revalidate =`; fixed */
  _Atomic uint64_t revalidations;   /* checks made at open */

  atomic_bool changed;              /* the object changed: EIO */
  atomic_bool stopping;             /* abort transfers: closing */
  atomic_bool retrying;             /* a retry episode was logged */
  _Atomic uint64_t requests, bytes, retries;
  _Atomic uint64_t waits;           /* reads that waited for a fetch */
  pthread_mutex_t error_lock;
  char last_error[256];             /* protected by error_lock */
};

/* The response headers the transport looks at. */
struct http_headers
{
  char accept_ranges[64];
  char etag[256];
  char last_modified[128];
  char content_range[128];
};

/* headers.c: pure parsing and checks of responses (fuzzed). */
enum fetch_verdict { FETCH_OK, FETCH_RETRY, FETCH_CHANGED, FETCH_FATAL };
void http_header_value (const char *line, size_t n, const char *name,
                        char *dst, size_t dstlen);
void http_headers_line (struct http_headers *hd, const char *line, size_t n);
bool http_parse_content_range (const char *text, uint64_t *a, uint64_t *b,
                               uint64_t *t);
int http_content_range_total (const char *text, uint64_t *total);
enum fetch_verdict http_check_response (const struct http_request_config *rc,
                                        long code,
                                        const struct http_headers *hd,
                                        size_t got, uint64_t offset,
                                        size_t len, char *why, size_t whylen);

/* handle.c */
CURL *http_handle_new (const struct http_request_config *rc,
                       atomic_bool *stopping);
int http_read_secret (const char *what, const char *path, char **out);
int http_read_headers (const char *path, struct curl_slist **out);
int http_read_cookies (const char *path, char **out);
int http_redact_url (const char *url, char **key, char **display);
bool http_same_origin (const char *a, const char *b);
bool http_is_https (const char *url);
int http_redirect (struct http_request_config *rc, const char *target);

/* fetch.c: one attempt; the verdicts tell retry.c what to do. */
enum fetch_verdict http_fetch_once (const struct http_request_config *rc,
                                    CURL *c, char *buf, uint64_t offset,
                                    size_t len, char *why, size_t whylen);

/* retry.c: fetch with retries; 0 or a negative errno with a message. */
int http_fetch (struct http_layer *h, CURL *c, char *buf, uint64_t offset,
                size_t len);
void http_note_changed (struct http_layer *h, const char *why);

/* chunks.c */
int http_chunks_pread (struct http_layer *h, void *buf, size_t count,
                       uint64_t offset);
int http_chunks_prefetch (struct http_layer *h, uint64_t offset,
                          uint64_t length);
void http_chunks_shutdown (struct http_layer *h);

#endif
