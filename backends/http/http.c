/* diskshelf: the HTTP(S) transport (`source = http://...` or https).
 *
 * Open asks the server for the size and validators (HEAD, or a GET of
 * bytes 0-0 when HEAD is refused), following redirects once, hop by hop
 * (http_redirect: no https->http, credentials only to the original
 * origin); the final URL is used from then on.  Every open of the file
 * asks again, at most once per `revalidate` seconds (http_revalidate).  Reads become range GETs, checked and made
 * conditional with If-Range (fetch.c), retried with back-off (retry.c),
 * and kept in the shared disk cache (chunks.c).  Credentials, headers
 * and cookies come from files named by the entry and never reach logs.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "entry.h"
#include "clock.h"
#include "error.h"
#include "stack.h"
#include "text.h"

/* Seconds of retrying at open: entries open one after another at mount,
 * so a dead server must not hold the others up for long. */
#define OPEN_RETRY_MAX 5.0

/* Redirects followed at open, at most. */
#define MAX_REDIRECTS 10

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

/* Initialise libcurl once per process. */
static void
init_curl (void)
{
  curl_global_init (CURL_GLOBAL_DEFAULT);
}

/* What the open-time request learned from the headers. */
struct probe
{
  CURL *c;
  struct http_headers hd;
  size_t body;
};

/* Record the headers of the last response (each redirect starts over). */
static size_t
probe_header_cb (char *buffer, size_t size, size_t nitems, void *arg)
{
  struct probe *p = arg;
  size_t n = size * nitems;

  http_headers_line (&p->hd, buffer, n);
  return n;
}

/* Swallow at most a byte of probe body; stop a server that sends more
 * (it ignored the range). */
static size_t
probe_write_cb (char *ptr, size_t size, size_t nmemb, void *arg)
{
  struct probe *p = arg;

  p->body += size * nmemb;
  return p->body > 1 ? 0 : size * nmemb;
}

/* Perform one probe request (HEAD or GET 0-0), retrying transient
 * failures within the budget.  Returns 0 with *code, or -errno. */
static int
probe_request (struct http_layer *h, struct probe *p, bool head, long *code)
{
  double start = clock_seconds ();
  long delay = 100;
  char errbuf[CURL_ERROR_SIZE];

  for (;;)
    {
      CURLcode res;

      memset (&p->hd, 0, sizeof p->hd);
      p->body = 0;
      errbuf[0] = '\0';
      curl_easy_setopt (p->c, CURLOPT_URL, h->rc.url);
      curl_easy_setopt (p->c, CURLOPT_FOLLOWLOCATION, 0L);
      curl_easy_setopt (p->c, CURLOPT_HEADERFUNCTION, probe_header_cb);
      curl_easy_setopt (p->c, CURLOPT_HEADERDATA, p);
      curl_easy_setopt (p->c, CURLOPT_WRITEFUNCTION, probe_write_cb);
      curl_easy_setopt (p->c, CURLOPT_WRITEDATA, p);
      curl_easy_setopt (p->c, CURLOPT_ERRORBUFFER, errbuf);
      if (head)
        curl_easy_setopt (p->c, CURLOPT_NOBODY, 1L);
      else
        {
          curl_easy_setopt (p->c, CURLOPT_HTTPGET, 1L);
          curl_easy_setopt (p->c, CURLOPT_RANGE, "0-0");
        }
      res = curl_easy_perform (p->c);
      curl_easy_setopt (p->c, CURLOPT_ERRORBUFFER, NULL);
      curl_easy_setopt (p->c, CURLOPT_RANGE, NULL);
      *code = 0;
      curl_easy_getinfo (p->c, CURLINFO_RESPONSE_CODE, code);
      atomic_fetch_add (&h->requests, 1);
      if (res == CURLE_WRITE_ERROR && p->body > 1)
        res = CURLE_OK;       /* a 200 with a body: judged by the caller */
      if (res == CURLE_PEER_FAILED_VERIFICATION
          || res == CURLE_SSL_CACERT_BADFILE)
        return error_set (EACCES, "http: %s: %s: TLS certificate not "
                          "trusted (%s); set ca-file = the CA that signed "
                          "it, or tls-verify = no", h->rc.entry_name,
                          h->rc.display, errbuf[0] ? errbuf
                          : curl_easy_strerror (res));
      if (res == CURLE_OK && !(*code >= 500 || *code == 408 || *code == 429))
        return 0;
      if (res != CURLE_OK && res != CURLE_COULDNT_CONNECT
          && res != CURLE_OPERATION_TIMEDOUT && res != CURLE_RECV_ERROR
          && res != CURLE_SEND_ERROR && res != CURLE_GOT_NOTHING
          && res != CURLE_COULDNT_RESOLVE_HOST
          && res != CURLE_SSL_CONNECT_ERROR)
        return error_set (EIO, "http: %s: %s: %s", h->rc.entry_name,
                          h->rc.display, errbuf[0] ? errbuf
                          : curl_easy_strerror (res));
      if (clock_seconds () - start + delay / 1000.0
          > (h->rc.retry_time < OPEN_RETRY_MAX ? h->rc.retry_time
             : OPEN_RETRY_MAX))
        return error_set (EIO, "http: %s: %s: %s", h->rc.entry_name,
                          h->rc.display, res != CURLE_OK
                          ? (errbuf[0] ? errbuf : curl_easy_strerror (res))
                          : "the server kept answering with errors");
      {
        struct timespec ts = { delay / 1000, (delay % 1000) * 1000000L };
        nanosleep (&ts, NULL);
      }
      delay = delay * 2 > 2000 ? 2000 : delay * 2;
    }
}

/* A probe request that follows redirects itself, one hop at a time, so
 * that every hop is checked by http_redirect; the last URL becomes
 * the entry's URL.  Without follow (revalidation: the URL is fixed) a
 * redirect is returned like any other answer.  Returns 0 with *code, or
 * -errno. */
static int
probe_follow (struct http_layer *h, struct probe *p, bool head, bool follow,
              long *code)
{
  for (int hops = 0; ; hops++)
    {
      char *location = NULL;
      int r = probe_request (h, p, head, code);

      if (r < 0)
        return r;
      if (*code < 300 || *code > 399 || !follow)
        return 0;
      curl_easy_getinfo (p->c, CURLINFO_REDIRECT_URL, &location);
      if (location == NULL)
        return 0;
      if (hops == MAX_REDIRECTS)
        return error_set (EIO, "http: %s: %s: more than %d redirects",
                          h->rc.entry_name, h->rc.display, MAX_REDIRECTS);
      r = http_redirect (&h->rc, location);  /* before the handle goes */
      if (r < 0)
        return r;
      curl_easy_cleanup (p->c);
      p->c = http_handle_new (&h->rc, &h->stopping);
      if (p->c == NULL)
        return error_set (ENOMEM, "http: out of memory");
    }
}

/* What the server says about the object now. */
struct http_object
{
  uint64_t size;
  char *etag, *last_modified;  /* malloc'd, NULL when not sent */
  long code;                   /* the last HTTP status seen, 0 if none */
};

/* Learn the size and validators (and, with follow, the final URL);
 * refuse servers without range support.  Returns 0 with o filled, or
 * -errno with o->code saying what the server last answered. */
static int
probe_object (struct http_layer *h, struct http_object *o, bool follow)
{
  struct probe p = { 0 };
  curl_off_t length = -1;
  long code = 0;
  int r;

  memset (o, 0, sizeof *o);
  p.c = http_handle_new (&h->rc, &h->stopping);
  if (p.c == NULL)
    return error_set (ENOMEM, "http: out of memory");
  r = probe_follow (h, &p, true, follow, &code);
  if (r < 0)
    goto out;
  if (code == 200)
    curl_easy_getinfo (p.c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (code == 200 && strcasecmp (p.hd.accept_ranges, "none") == 0)
    {
      r = error_set (ENOTSUP, "http: %s: %s: the server does not support "
                     "range requests (Accept-Ranges: none); diskshelf "
                     "needs them", h->rc.entry_name, h->rc.display);
      goto out;
    }
  if (code == 200 && length >= 0 && strcasecmp (p.hd.accept_ranges, "bytes") == 0)
    o->size = (uint64_t) length;
  else
    {
      /* HEAD refused or not conclusive: ask for the first byte. */
      curl_easy_setopt (p.c, CURLOPT_NOBODY, 0L);
      r = probe_follow (h, &p, false, follow, &code);
      if (r < 0)
        goto out;
      if (code == 200)
        {
          r = error_set (ENOTSUP, "http: %s: %s: the server does not "
                         "support range requests (it sent the whole object "
                         "for a Range request); diskshelf needs them",
                         h->rc.entry_name, h->rc.display);
          goto out;
        }
      if ((code != 206 && code != 416)
          || http_content_range_total (p.hd.content_range, &o->size) < 0
          || (code == 416 && o->size != 0))
        {
          r = error_set (EIO, "http: %s: %s: HTTP %ld%s", h->rc.entry_name,
                         h->rc.display, code,
                         code == 404 ? " (not found: check source =)"
                         : code == 401 || code == 403
                         ? " (check user, password-file, header-file)" : "");
          goto out;
        }
    }
  if (o->size > HTTP_MAX_SIZE)
    {
      r = error_set (EFBIG, "http: %s: %s: the server claims %" PRIu64
                     " bytes, more than the %" PRIu64 " (1 PiB) diskshelf "
                     "accepts: a broken or hostile server", h->rc.entry_name,
                     h->rc.display, o->size, HTTP_MAX_SIZE);
      goto out;
    }
  if ((p.hd.etag[0] && (o->etag = strdup (p.hd.etag)) == NULL)
      || (p.hd.last_modified[0]
          && (o->last_modified = strdup (p.hd.last_modified)) == NULL))
    {
      r = error_set (ENOMEM, "http: out of memory");
      goto out;
    }
  r = 0;
 out:
  o->code = code;
  if (r < 0)
    {
      free (o->etag);
      free (o->last_modified);
      o->etag = o->last_modified = NULL;
    }
  curl_easy_cleanup (p.c);
  return r;
}

/* True when two optional validators differ (a validator the server
 * stopped or started sending counts only when the other one is there to
 * compare). */
static bool
validator_differs (const char *then, const char *now)
{
  return then && now && strcmp (then, now) != 0;
}

/* Ask the server whether the object is still the one opened.  Returns 0
 * when it is, 1 when it changed (why says how), or -errno when the
 * server could not be asked (network, 5xx). */
static int
check_object (struct http_layer *h, char *why, size_t whylen)
{
  struct http_object now;
  int r = probe_object (h, &now, false);

  if (r < 0)
    {
      if (now.code >= 300 && now.code < 500 && now.code != 408
          && now.code != 429)
        {
          snprintf (why, whylen, "it now answers HTTP %ld", now.code);
          return 1;
        }
      return r;
    }
  r = 0;
  if (now.size != h->rc.size)
    {
      snprintf (why, whylen, "its size changed from %" PRIu64 " to %"
                PRIu64, h->rc.size, now.size);
      r = 1;
    }
  else if (validator_differs (h->rc.etag, now.etag)
           || validator_differs (h->rc.last_modified, now.last_modified)
           || (h->rc.etag && now.etag == NULL && h->rc.last_modified == NULL))
    {
      char e[1024], lm[512];
      snprintf (why, whylen, "its ETag/Last-Modified changed to (%s, %s)",
                text_escape (e, sizeof e, now.etag ? now.etag : "",
                             now.etag ? strlen (now.etag) : 0),
                text_escape (lm, sizeof lm,
                             now.last_modified ? now.last_modified : "",
                             now.last_modified ? strlen (now.last_modified)
                             : 0));
      r = 1;
    }
  free (now.etag);
  free (now.last_modified);
  return r;
}

/* Layer callback at every open of the file: check with the server that
 * the object did not change, at most once per `revalidate` seconds.  A
 * changed object fails this open and every read (EIO, one log line) and
 * its cached bytes are dropped; a server that cannot be asked leaves the
 * cached bytes in use (with a warning). */
static int
http_revalidate (struct layer *l)
{
  struct http_layer *h = (struct http_layer *) l;
  char why[512] = "";
  int r = 0;

  pthread_mutex_lock (&h->revalidate_lock);
  if (!atomic_load (&h->changed)
      && clock_seconds () - h->validated_at >= h->revalidate_s)
    {
      r = check_object (h, why, sizeof why);
      if (r == 1)
        http_note_changed (h, why);
      else if (r < 0)
        log_warning ("http: %s: %s: cannot check whether it changed (%s); "
                     "serving what is cached", h->rc.entry_name,
                     h->rc.display, error_message ());
      atomic_fetch_add (&h->revalidations, 1);
      h->validated_at = clock_seconds ();
    }
  pthread_mutex_unlock (&h->revalidate_lock);
  if (atomic_load (&h->changed))
    return error_set (EIO, "http: %s: %s changed on the server; reopen the "
                      "entry (touch its .conf) to read the new version",
                      h->rc.entry_name, h->rc.display);
  return 0;
}

/* Make every later GET conditional on the validators just learned. */
static int
add_if_range (struct http_layer *h)
{
  const char *v = NULL;
  char *line;
  struct curl_slist *l;

  if (h->rc.etag && strncmp (h->rc.etag, "W/", 2) != 0)
    v = h->rc.etag;        /* If-Range needs a strong ETag (RFC 9110 13.1.5) */
  else if (h->rc.last_modified)
    v = h->rc.last_modified;
  if (v == NULL)
    return 0;
  if (asprintf (&line, "If-Range: %s", v) < 0)
    return -ENOMEM;
  l = curl_slist_append (h->rc.headers, line);
  free (line);
  if (l == NULL)
    return -ENOMEM;
  h->rc.headers = l;
  return 0;
}

/* Layer callback: read through the chunk engine. */
static int
http_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  return http_chunks_pread ((struct http_layer *) l, buf, count, offset);
}

/* Layer callback: queue read-ahead for a range. */
static int
http_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  return http_chunks_prefetch ((struct http_layer *) l, offset, length);
}

/* The URL and validators: what tells this object from another. */
static void
http_identity (struct layer *l, FILE *out)
{
  struct http_layer *h = (struct http_layer *) l;

  fprintf (out, "url: %s\n", h->rc.display);
  if (h->rc.etag)
    fprintf (out, "etag: %s\n", h->rc.etag);
  if (h->rc.last_modified)
    fprintf (out, "last-modified: %s\n", h->rc.last_modified);
}

/* "http-...: ..." lines for `diskshelf status`; no secrets. */
static void
http_status (struct layer *l, FILE *out)
{
  struct http_layer *h = (struct http_layer *) l;
  char shown[1024];

  fprintf (out, "http-url: %s\n", h->rc.display);
  fprintf (out, "http-size: %" PRIu64 "\n", h->rc.size);
  if (h->rc.etag)
    fprintf (out, "http-etag: %s\n", text_escape (shown, sizeof shown,
                                                   h->rc.etag,
                                                   strlen (h->rc.etag)));
  if (h->rc.last_modified)
    fprintf (out, "http-last-modified: %s\n",
             text_escape (shown, sizeof shown, h->rc.last_modified,
                          strlen (h->rc.last_modified)));
  fprintf (out, "http-state: %s\n", atomic_load (&h->changed)
           ? "changed on the server (reads fail with EIO)" : "ok");
  fprintf (out, "http-requests: %" PRIu64 "\n", atomic_load (&h->requests));
  fprintf (out, "http-fetched: %" PRIu64 " bytes\n", atomic_load (&h->bytes));
  fprintf (out, "http-retries: %" PRIu64 "\n", atomic_load (&h->retries));
  fprintf (out, "http-revalidations: %" PRIu64 "\n",
           atomic_load (&h->revalidations));
  fprintf (out, "http-reads-waiting-for-fetch: %" PRIu64 "\n",
           atomic_load (&h->waits));
  pthread_mutex_lock (&h->lock);
  fprintf (out, "http-pending-chunks: %u\n", h->pending);
  pthread_mutex_unlock (&h->lock);
  pthread_mutex_lock (&h->error_lock);
  if (h->last_error[0])
    fprintf (out, "http-last-error: %s\n", h->last_error);
  pthread_mutex_unlock (&h->error_lock);
  if (h->dc)
    disk_cache_object_status (h->dc, out);
}

/* Free everything the layer owns (workers are stopped first). */
static void
http_free (struct http_layer *h)
{
  http_chunks_shutdown (h);
  if (h->dc)
    disk_cache_close_object (h->dc);
  free (h->rc.url);
  free (h->rc.display);
  free (h->rc.entry_name);
  free (h->rc.user);
  free (h->rc.password);
  free (h->rc.cookie);
  free (h->rc.user_agent);
  free (h->rc.ca_file);
  free (h->rc.ca_path);
  free (h->rc.etag);
  free (h->rc.last_modified);
  curl_slist_free_all (h->rc.headers);
  pthread_mutex_destroy (&h->lock);
  pthread_mutex_destroy (&h->error_lock);
  pthread_mutex_destroy (&h->revalidate_lock);
  pthread_cond_destroy (&h->chunk_cond);
  pthread_cond_destroy (&h->work_cond);
  pthread_cond_destroy (&h->store_cond);
  pthread_cond_destroy (&h->store_space);
  free (h);
}

/* Layer callback: stop the workers and free the layer. */
static void
http_close (struct layer *l)
{
  http_free ((struct http_layer *) l);
}

static const struct layer_ops http_ops = {
  .name = "http",
  .pread = http_pread,
  .prefetch = http_prefetch,
  .revalidate = http_revalidate,
  .status = http_status,
  .identity = http_identity,
  .close = http_close,
};

/* strdup that keeps NULL. */
static char *
dup_or_null (const char *s)
{
  return s ? strdup (s) : NULL;
}

/* Fill the request settings from the entry: credentials and headers
 * from their files, TLS, timeouts. */
static int
configure (struct http_layer *h, const struct entry_config *e,
           const char *url, char **key)
{
  int r;

  h->rc.entry_name = strdup (e->name ? e->name : url);
  h->rc.url = strdup (url);
  if (h->rc.entry_name == NULL || h->rc.url == NULL)
    return error_set (ENOMEM, "http: out of memory");
  r = http_redact_url (url, key, &h->rc.display);
  if (r < 0)
    return error_set (EINVAL, "http: %s: not a valid URL (check source =)",
                      h->rc.entry_name);
  if (e->password_file && e->user == NULL)
    return error_set (EINVAL, "http: %s: password-file is set but user is "
                      "not", h->rc.entry_name);
  h->rc.user = dup_or_null (e->user);
  if (e->password_file
      && (r = http_read_secret ("password-file", e->password_file,
                                &h->rc.password)) < 0)
    return error_prefix (r, "http: %s", h->rc.entry_name);
  if (e->header_file
      && (r = http_read_headers (e->header_file, &h->rc.headers)) < 0)
    return error_prefix (r, "http: %s", h->rc.entry_name);
  if (e->cookie_file
      && (r = http_read_cookies (e->cookie_file, &h->rc.cookie)) < 0)
    return error_prefix (r, "http: %s", h->rc.entry_name);
  h->rc.user_agent = strdup (e->user_agent ? e->user_agent
                             : "diskshelf/" PACKAGE_VERSION);
  h->rc.credentials_on_redirect = e->send_credentials_on_redirect == FLAG_YES;
  h->rc.ca_file = dup_or_null (e->ca_file);
  h->rc.ca_path = dup_or_null (e->ca_path);
  h->rc.verify = e->tls_verify != FLAG_NO;
  h->rc.timeout_s = e->timeout > 0 ? (long) (e->timeout + 0.999)
    : (long) HTTP_DEFAULT_TIMEOUT;
  h->rc.retry_time = e->retry_time > 0 ? e->retry_time
    : HTTP_DEFAULT_RETRY_TIME;
  h->max_workers = e->connections ? e->connections
    : HTTP_DEFAULT_CONNECTIONS;
  h->revalidate_s = e->revalidate >= 0 ? e->revalidate
    : HTTP_DEFAULT_REVALIDATE;
  return 0;
}

/* Open an HTTP(S) URL as a read-only, immutable transport. */
int
layer_http_open (const struct stack_context *ctx, const char *url,
                 struct layer **out)
{
  struct http_layer *h;
  char *key = NULL;
  int r;

  pthread_once (&curl_once, init_curl);
  h = calloc (1, sizeof *h);
  if (h == NULL)
    return error_set (ENOMEM, "http: out of memory");
  pthread_mutex_init (&h->lock, NULL);
  pthread_mutex_init (&h->error_lock, NULL);
  pthread_mutex_init (&h->revalidate_lock, NULL);
  pthread_cond_init (&h->chunk_cond, NULL);
  pthread_cond_init (&h->work_cond, NULL);
  pthread_cond_init (&h->store_cond, NULL);
  pthread_cond_init (&h->store_space, NULL);
  /* Not sequential yet: one read (the stack's magic-byte probe, say)
   * gets no read-ahead; a second one that follows it does. */
  h->ra_end = UINT64_MAX / 2;
  h->layer.ops = &http_ops;

  r = configure (h, ctx->entry, url, &key);
  if (r == 0)
    {
      struct http_object o;
      r = probe_object (h, &o, true);
      h->rc.size = o.size;
      h->rc.etag = o.etag;
      h->rc.last_modified = o.last_modified;
      h->validated_at = clock_seconds ();
    }
  if (r == 0 && add_if_range (h) < 0)
    r = error_set (ENOMEM, "http: out of memory");
  if (r < 0)
    {
      free (key);
      http_free (h);
      return r;
    }
  h->layer.size = h->rc.size;
  h->layer.writable = false;
  h->layer.immutable = true;
  h->nchunks = (h->rc.size + HTTP_CHUNK - 1) / HTTP_CHUNK;

  if (ctx->services && ctx->services->disk_cache)
    {
      struct disk_cache_validators v = {
        .kind = "http", .key = key, .size = h->rc.size,
        .etag = h->rc.etag, .last_modified = h->rc.last_modified };
      if (disk_cache_open_object (ctx->services->disk_cache, &v, &h->dc) < 0)
        {
          log_warning ("http: %s: %s; reading uncached", h->rc.entry_name,
                       error_message ());
          h->dc = NULL;
        }
    }
  free (key);
  *out = &h->layer;
  return 0;
}
