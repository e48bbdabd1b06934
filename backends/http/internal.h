/* diskshelf: private header of the HTTP(S) transport (backends/http/).
 *
 *   http.c    the layer: open (probe size and validators), status,
 *             close; the fetcher the remote-bytes engine reads with
 *   fetch.c   one range GET with every check on the response
 *   retry.c   retrying a range GET with back-off within a time budget
 *   handle.c  configuring curl handles; secrets; URL redaction
 *   headers.c response headers, Content-Range, the checks on a response
 *
 * Reads go through the remote-bytes engine (backends/remote/): chunks
 * fetched once however many readers want them, by its pool of threads,
 * each holding one curl handle (one kept-alive connection) as its fetch
 * context.  Two entries over one URL (same validators) share one engine
 * object and so one http_source.
 *
 * Thread model: every layer callback may run on many threads; the
 * source is read-only after open except its atomics and the fields
 * under error_lock and revalidate_lock.
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
#include "remote/remote.h"

#define HTTP_CHUNK DISK_CACHE_CHUNK
#define HTTP_MAX_SIZE DISK_CACHE_MAX_SIZE /* larger claimed sizes refused */
#define HTTP_DEFAULT_CONNECTIONS 4
#define HTTP_DEFAULT_TIMEOUT 30.0
#define HTTP_DEFAULT_RETRY_TIME 60.0
#define HTTP_DEFAULT_REVALIDATE 30.0  /* seconds between checks at open */

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

/* What a remote object fetches with: the request settings and the
 * counters.  Owned by the engine's object (backends/remote/), so two
 * entries over one URL share it; fixed after open except where said. */
struct http_source
{
  struct http_request_config rc;
  unsigned connections;             /* `connections =` */

  atomic_bool changed;              /* the object changed: EIO */
  atomic_bool stopping;             /* abort transfers: closing */
  atomic_bool retrying;             /* a retry episode was logged */
  _Atomic uint64_t requests, bytes, retries;
  pthread_mutex_t error_lock;
  char last_error[256];             /* protected by error_lock */
};

/* The layer: one entry's reader of the shared object, with what is
 * the entry's own (its name, its revalidation interval). */
struct http_layer
{
  struct layer layer;
  struct http_source *src;          /* the object's; borrowed */
  struct remote_reader *rd;         /* owned */
  char *entry_name;                 /* fixed */

  pthread_mutex_t revalidate_lock;  /* one check at a time */
  double validated_at;              /* last check; revalidate_lock */
  double revalidate_s;              /* `revalidate =`; fixed */
  _Atomic uint64_t revalidations;   /* checks made at open */
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

/* retry.c: fetch with retries; 0 or a negative errno with a message
 * (-ESTALE: the object changed on the server). */
int http_fetch (struct http_source *s, CURL *c, char *buf, uint64_t offset,
                size_t len);
void http_note_changed (struct http_source *s, const char *why);

#endif
