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
#include "options.h"
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
probe_request (struct http_source *s, struct probe *p, bool head, long *code)
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
      curl_easy_setopt (p->c, CURLOPT_URL, s->rc.url);
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
      atomic_fetch_add (&s->requests, 1);
      if (res == CURLE_WRITE_ERROR && p->body > 1)
        res = CURLE_OK;       /* a 200 with a body: judged by the caller */
      if (res == CURLE_PEER_FAILED_VERIFICATION
          || res == CURLE_SSL_CACERT_BADFILE)
        return error_set (EACCES, "http: %s: %s: TLS certificate not "
                          "trusted (%s); set ca-file = the CA that signed "
                          "it, or tls-verify = no", s->rc.entry_name,
                          s->rc.display, errbuf[0] ? errbuf
                          : curl_easy_strerror (res));
      if (res == CURLE_OK && !(*code >= 500 || *code == 408 || *code == 429))
        return 0;
      if (res != CURLE_OK && res != CURLE_COULDNT_CONNECT
          && res != CURLE_OPERATION_TIMEDOUT && res != CURLE_RECV_ERROR
          && res != CURLE_SEND_ERROR && res != CURLE_GOT_NOTHING
          && res != CURLE_COULDNT_RESOLVE_HOST
          && res != CURLE_SSL_CONNECT_ERROR)
        return error_set (EIO, "http: %s: %s: %s", s->rc.entry_name,
                          s->rc.display, errbuf[0] ? errbuf
                          : curl_easy_strerror (res));
      if (clock_seconds () - start + delay / 1000.0
          > (s->rc.retry_time < OPEN_RETRY_MAX ? s->rc.retry_time
             : OPEN_RETRY_MAX))
        return error_set (EIO, "http: %s: %s: %s", s->rc.entry_name,
                          s->rc.display, res != CURLE_OK
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
probe_follow (struct http_source *s, struct probe *p, bool head, bool follow,
              long *code)
{
  for (int hops = 0; ; hops++)
    {
      char *location = NULL;
      int r = probe_request (s, p, head, code);

      if (r < 0)
        return r;
      if (*code < 300 || *code > 399 || !follow)
        return 0;
      curl_easy_getinfo (p->c, CURLINFO_REDIRECT_URL, &location);
      if (location == NULL)
        return 0;
      if (hops == MAX_REDIRECTS)
        return error_set (EIO, "http: %s: %s: more than %d redirects",
                          s->rc.entry_name, s->rc.display, MAX_REDIRECTS);
      r = http_redirect (&s->rc, location);  /* before the handle goes */
      if (r < 0)
        return r;
      curl_easy_cleanup (p->c);
      p->c = http_handle_new (&s->rc, &s->stopping);
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
probe_object (struct http_source *s, struct http_object *o, bool follow)
{
  struct probe p = { 0 };
  curl_off_t length = -1;
  long code = 0;
  int r;

  memset (o, 0, sizeof *o);
  p.c = http_handle_new (&s->rc, &s->stopping);
  if (p.c == NULL)
    return error_set (ENOMEM, "http: out of memory");
  r = probe_follow (s, &p, true, follow, &code);
  if (r < 0)
    goto out;
  if (code == 200)
    curl_easy_getinfo (p.c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (code == 200 && strcasecmp (p.hd.accept_ranges, "none") == 0)
    {
      r = error_set (ENOTSUP, "http: %s: %s: the server does not support "
                     "range requests (Accept-Ranges: none); diskshelf "
                     "needs them", s->rc.entry_name, s->rc.display);
      goto out;
    }
  if (code == 200 && length >= 0 && strcasecmp (p.hd.accept_ranges, "bytes") == 0)
    o->size = (uint64_t) length;
  else
    {
      /* HEAD refused or not conclusive: ask for the first byte. */
      curl_easy_setopt (p.c, CURLOPT_NOBODY, 0L);
      r = probe_follow (s, &p, false, follow, &code);
      if (r < 0)
        goto out;
      if (code == 200)
        {
          r = error_set (ENOTSUP, "http: %s: %s: the server does not "
                         "support range requests (it sent the whole object "
                         "for a Range request); diskshelf needs them",
                         s->rc.entry_name, s->rc.display);
          goto out;
        }
      if ((code != 206 && code != 416)
          || http_content_range_total (p.hd.content_range, &o->size) < 0
          || (code == 416 && o->size != 0))
        {
          r = error_set (EIO, "http: %s: %s: HTTP %ld%s", s->rc.entry_name,
                         s->rc.display, code,
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
                     "accepts: a broken or hostile server", s->rc.entry_name,
                     s->rc.display, o->size, HTTP_MAX_SIZE);
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
check_object (struct http_source *s, char *why, size_t whylen)
{
  struct http_object now;
  int r = probe_object (s, &now, false);

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
  if (now.size != s->rc.size)
    {
      snprintf (why, whylen, "its size changed from %" PRIu64 " to %"
                PRIu64, s->rc.size, now.size);
      r = 1;
    }
  else if (validator_differs (s->rc.etag, now.etag)
           || validator_differs (s->rc.last_modified, now.last_modified)
           || (s->rc.etag && now.etag == NULL && s->rc.last_modified == NULL))
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
  struct http_source *s = h->src;
  char why[512] = "";
  int r = 0;

  pthread_mutex_lock (&h->revalidate_lock);
  if (!atomic_load (&s->changed)
      && clock_seconds () - h->validated_at >= h->revalidate_s)
    {
      r = check_object (s, why, sizeof why);
      if (r == 1)
        http_note_changed (s, why);
      else if (r < 0)
        log_warning ("http: %s: %s: cannot check whether it changed (%s); "
                     "serving what is cached", h->entry_name,
                     s->rc.display, error_message ());
      atomic_fetch_add (&h->revalidations, 1);
      h->validated_at = clock_seconds ();
    }
  pthread_mutex_unlock (&h->revalidate_lock);
  if (atomic_load (&s->changed))
    {
      remote_mark_changed (h->rd);
      return error_set (EIO, "http: %s: %s changed on the server; reopen "
                        "the entry (touch its .conf) to read the new "
                        "version", h->entry_name, s->rc.display);
    }
  return 0;
}

/* Make every later GET conditional on the validators just learned. */
static int
add_if_range (struct http_source *s)
{
  const char *v = NULL;
  char *line;
  struct curl_slist *l;

  if (s->rc.etag && strncmp (s->rc.etag, "W/", 2) != 0)
    v = s->rc.etag;        /* If-Range needs a strong ETag (RFC 9110 13.1.5) */
  else if (s->rc.last_modified)
    v = s->rc.last_modified;
  if (v == NULL)
    return 0;
  if (asprintf (&line, "If-Range: %s", v) < 0)
    return -ENOMEM;
  l = curl_slist_append (s->rc.headers, line);
  free (line);
  if (l == NULL)
    return -ENOMEM;
  s->rc.headers = l;
  return 0;
}

/* Layer callback: read through the remote-bytes engine. */
static int
http_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  return remote_pread (((struct http_layer *) l)->rd, buf, count, offset);
}

/* Layer callback: queue read-ahead for a range. */
static int
http_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  return remote_prefetch (((struct http_layer *) l)->rd, offset, length);
}

/* The URL and validators: what tells this object from another. */
static void
http_identity (struct layer *l, FILE *out)
{
  struct http_source *s = ((struct http_layer *) l)->src;

  fprintf (out, "url: %s\n", s->rc.display);
  if (s->rc.etag)
    fprintf (out, "etag: %s\n", s->rc.etag);
  if (s->rc.last_modified)
    fprintf (out, "last-modified: %s\n", s->rc.last_modified);
}

/* A complete disk-cache copy is the object's bytes at their offsets:
 * lend its data file, pinned whole until the borrower releases it. */
static int
http_lend_file (struct layer *l, struct layer_lend *out)
{
  return remote_lend_file (((struct http_layer *) l)->rd, out);
}

/* "http-...: ..." lines for `diskshelf status`; no secrets. */
static void
http_status (struct layer *l, FILE *out)
{
  struct http_layer *h = (struct http_layer *) l;
  struct http_source *s = h->src;
  char shown[1024];

  fprintf (out, "http-url: %s\n", s->rc.display);
  fprintf (out, "http-size: %" PRIu64 "\n", s->rc.size);
  if (s->rc.etag)
    fprintf (out, "http-etag: %s\n", text_escape (shown, sizeof shown,
                                                   s->rc.etag,
                                                   strlen (s->rc.etag)));
  if (s->rc.last_modified)
    fprintf (out, "http-last-modified: %s\n",
             text_escape (shown, sizeof shown, s->rc.last_modified,
                          strlen (s->rc.last_modified)));
  fprintf (out, "http-state: %s\n", atomic_load (&s->changed)
           ? "changed on the server (reads fail with EIO)" : "ok");
  fprintf (out, "http-requests: %" PRIu64 "\n", atomic_load (&s->requests));
  fprintf (out, "http-fetched: %" PRIu64 " bytes\n", atomic_load (&s->bytes));
  fprintf (out, "http-retries: %" PRIu64 "\n", atomic_load (&s->retries));
  fprintf (out, "http-revalidations: %" PRIu64 "\n",
           atomic_load (&h->revalidations));
  pthread_mutex_lock (&s->error_lock);
  if (s->last_error[0])
    fprintf (out, "http-last-error: %s\n", s->last_error);
  pthread_mutex_unlock (&s->error_lock);
  remote_status (h->rd, out);
}

/* Free a source (the engine calls this when its object goes). */
static void
http_source_free (struct http_source *s)
{
  free (s->rc.url);
  free (s->rc.display);
  free (s->rc.entry_name);
  free (s->rc.user);
  free (s->rc.password);
  free (s->rc.cookie);
  free (s->rc.user_agent);
  free (s->rc.ca_file);
  free (s->rc.ca_path);
  free (s->rc.etag);
  free (s->rc.last_modified);
  curl_slist_free_all (s->rc.headers);
  pthread_mutex_destroy (&s->error_lock);
  free (s);
}

/* Free the layer's own part (not its reader). */
static void
http_layer_free (struct http_layer *h)
{
  free (h->entry_name);
  pthread_mutex_destroy (&h->revalidate_lock);
  free (h);
}

/* Layer callback: drop this entry's reader (the last one stops the
 * engine's threads and frees the object and its source). */
static void
http_close (struct layer *l)
{
  struct http_layer *h = (struct http_layer *) l;

  remote_close (h->rd);
  http_layer_free (h);
}

/* The fetcher the engine reads with: a curl handle per thread. */
static void *
fetcher_context_new (void *source)
{
  struct http_source *s = source;
  CURL *c = http_handle_new (&s->rc, &s->stopping);

  if (c == NULL)
    error_set (ENOMEM, "http: %s: cannot create a curl handle",
               s->rc.entry_name);
  return c;
}

static void
fetcher_context_free (void *source, void *ctx)
{
  curl_easy_cleanup (ctx);
}

static int
fetcher_fetch (void *source, void *ctx, void *buf, uint64_t offset,
               size_t len)
{
  return http_fetch (source, ctx, buf, offset, len);
}

static void
fetcher_stop (void *source)
{
  struct http_source *s = source;

  atomic_store (&s->stopping, true);
}

static void
fetcher_free (void *source)
{
  http_source_free (source);
}

static const struct remote_fetcher_ops http_fetcher = {
  .name = "http",
  .partial = true,
  .context_new = fetcher_context_new,
  .context_free = fetcher_context_free,
  .fetch = fetcher_fetch,
  .stop = fetcher_stop,
  .free = fetcher_free,
};

static const struct layer_ops http_ops = {
  .name = "http",
  .pread = http_pread,
  .prefetch = http_prefetch,
  .revalidate = http_revalidate,
  .status = http_status,
  .identity = http_identity,
  .lend_file = http_lend_file,
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
configure (struct http_source *s, const struct entry_config *e,
           const char *url, char **key)
{
  int r;

  s->rc.entry_name = strdup (e->name ? e->name : url);
  s->rc.url = strdup (url);
  if (s->rc.entry_name == NULL || s->rc.url == NULL)
    return error_set (ENOMEM, "http: out of memory");
  r = http_redact_url (url, key, &s->rc.display);
  if (r < 0)
    return error_set (EINVAL, "http: %s: not a valid URL (check source =)",
                      s->rc.entry_name);
  if (e->password_file && e->user == NULL)
    return error_set (EINVAL, "http: %s: password-file is set but user is "
                      "not", s->rc.entry_name);
  s->rc.user = dup_or_null (e->user);
  if (e->password_file
      && (r = http_read_secret ("password-file", e->password_file,
                                &s->rc.password)) < 0)
    return error_prefix (r, "http: %s", s->rc.entry_name);
  if (e->header_file
      && (r = http_read_headers (e->header_file, &s->rc.headers)) < 0)
    return error_prefix (r, "http: %s", s->rc.entry_name);
  if (e->cookie_file
      && (r = http_read_cookies (e->cookie_file, &s->rc.cookie)) < 0)
    return error_prefix (r, "http: %s", s->rc.entry_name);
  s->rc.user_agent = strdup (e->user_agent ? e->user_agent
                             : "diskshelf/" PACKAGE_VERSION);
  s->rc.credentials_on_redirect = e->send_credentials_on_redirect == FLAG_YES;
  s->rc.ca_file = dup_or_null (e->ca_file);
  s->rc.ca_path = dup_or_null (e->ca_path);
  s->rc.verify = e->tls_verify != FLAG_NO;
  s->rc.timeout_s = e->timeout > 0 ? (long) (e->timeout + 0.999)
    : (long) HTTP_DEFAULT_TIMEOUT;
  s->rc.retry_time = e->retry_time > 0 ? e->retry_time
    : HTTP_DEFAULT_RETRY_TIME;
  s->connections = e->connections ? e->connections
    : HTTP_DEFAULT_CONNECTIONS;
  return 0;
}

/* Open an HTTP(S) URL as a read-only, immutable transport: probe the
 * object, then read it through the engine's object for this URL and
 * validators (shared with any other entry that has it open). */
int
layer_http_open (const struct stack_context *ctx, const char *url,
                 struct layer **out)
{
  struct http_layer *h;
  struct http_source *s;
  char *key = NULL, label[512];
  int r;

  pthread_once (&curl_once, init_curl);
  h = calloc (1, sizeof *h);
  s = calloc (1, sizeof *s);
  if (h == NULL || s == NULL)
    {
      free (h);
      free (s);
      return error_set (ENOMEM, "http: out of memory");
    }
  pthread_mutex_init (&s->error_lock, NULL);
  pthread_mutex_init (&h->revalidate_lock, NULL);
  h->layer.ops = &http_ops;
  h->revalidate_s = ctx->entry->revalidate >= 0 ? ctx->entry->revalidate
    : HTTP_DEFAULT_REVALIDATE;

  r = configure (s, ctx->entry, url, &key);
  if (r == 0)
    {
      struct http_object o;
      r = probe_object (s, &o, true);
      s->rc.size = o.size;
      s->rc.etag = o.etag;
      s->rc.last_modified = o.last_modified;
      h->validated_at = clock_seconds ();
    }
  if (r == 0 && add_if_range (s) < 0)
    r = error_set (ENOMEM, "http: out of memory");
  if (r == 0)
    {
      struct remote_identity id = {
        .kind = "http", .key = key, .size = s->rc.size,
        .etag = s->rc.etag, .last_modified = s->rc.last_modified };
      struct remote_settings set = {
        .label = label, .display = s->rc.display,
        .connections = s->connections,
        .disk_cache = ctx->services ? ctx->services->disk_cache : NULL };
      snprintf (label, sizeof label, "http: %s", s->rc.entry_name);
      if (ctx->options && ctx->options->memory_cache_size > 0)
        remote_memory_budget (ctx->options->memory_cache_size
                              / REMOTE_MEMORY_SHARE);
      r = remote_open (&id, &set, &http_fetcher, s, &h->rd);
      if (r == 1)
        {
          /* Another entry has this object open: use its source. */
          http_source_free (s);
          s = remote_source (h->rd);
          r = 0;
        }
    }
  free (key);
  if (r == 0 && (h->entry_name = strdup (ctx->entry->name ? ctx->entry->name
                                         : url)) == NULL)
    {
      remote_close (h->rd);
      s = NULL;
      r = error_set (ENOMEM, "http: out of memory");
    }
  if (r < 0)
    {
      if (s)
        http_source_free (s);
      http_layer_free (h);
      return r;
    }
  h->src = s;
  h->layer.size = s->rc.size;
  h->layer.writable = false;
  h->layer.immutable = true;
  *out = &h->layer;
  return 0;
}
