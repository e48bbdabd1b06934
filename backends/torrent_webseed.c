/* diskshelf: BEP 19 web seeds for the torrent transport (see
 * torrent_webseed.h). */
#include "torrent_webseed.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "clock.h"
#include "config.h"
#include "error.h"
#include "http/internal.h"

#define WEBSEED_BACKOFF 30.0    /* seconds a failed web seed is skipped */

/* One url-list entry: a URL per file of the torrent. */
struct webseed
{
  char *base;                   /* the url-list entry, for messages */
  char **file_urls;             /* file_count URLs (NULL for pad files) */
  _Atomic double skip_until;    /* monotonic seconds */
};

struct torrent_webseeds
{
  const struct bt_metainfo *mi;           /* borrowed; outlives us */
  struct http_request_config rc;          /* template: TLS, timeouts */
  struct webseed *seeds;
  size_t count;
  atomic_bool stopping;
  _Atomic uint64_t pieces, bytes, failures;
};

/* Append text to a growing string. */
static bool
append (char **s, size_t *len, const char *text)
{
  size_t n = strlen (text);
  char *p = realloc (*s, *len + n + 1);
  if (p == NULL)
    return false;
  memcpy (p + *len, text, n + 1);
  *s = p;
  *len += n;
  return true;
}

/* Append a path ("a/b c") with each component percent-encoded. */
static bool
append_path (char **s, size_t *len, const char *path)
{
  bool ok = true;
  for (const char *q = path; ok && *q;)
    {
      size_t n = strcspn (q, "/");
      char *esc = curl_easy_escape (NULL, q, (int) n);
      ok = esc != NULL && append (s, len, esc)
           && (q[n] == '\0' || append (s, len, "/"));
      curl_free (esc);
      q += n + (q[n] == '/');
    }
  return ok;
}

/* The URL of file i at web seed base (BEP 19): a single-file torrent's
 * URL is base itself unless it ends with '/'; a multi-file torrent's
 * files are base/NAME/PATH. */
static char *
file_url (const struct bt_metainfo *mi, const char *base, size_t i)
{
  char *s = NULL;
  size_t len = 0;
  bool slash = base[0] && base[strlen (base) - 1] == '/';

  if (!append (&s, &len, base))
    return NULL;
  if (mi->multi_file || slash)
    {
      if ((!slash && !append (&s, &len, "/"))
          || !append_path (&s, &len, mi->name))
        goto fail;
      if (mi->multi_file && (!append (&s, &len, "/")
                             || !append_path (&s, &len, mi->files[i].path)))
        goto fail;
    }
  return s;
 fail:
  free (s);
  return NULL;
}

/* See torrent_webseed.h. */
int
webseeds_new (const struct bt_metainfo *mi, const char *label,
              const char *ca_file, double timeout,
              struct torrent_webseeds **out)
{
  struct torrent_webseeds *w;

  *out = NULL;
  if (mi->url_count == 0)
    return 0;
  w = calloc (1, sizeof *w);
  if (w == NULL || (w->seeds = calloc (mi->url_count, sizeof *w->seeds))
                   == NULL)
    {
      free (w);
      return error_set (ENOMEM, "%s: out of memory", label);
    }
  w->mi = mi;
  w->rc.entry_name = strdup (label);
  w->rc.display = strdup (label);
  w->rc.user_agent = strdup ("diskshelf/" PACKAGE_VERSION);
  w->rc.ca_file = ca_file ? strdup (ca_file) : NULL;
  w->rc.verify = true;
  w->rc.timeout_s = (long) (timeout > 1 ? timeout : 1);
  for (size_t k = 0; k < mi->url_count; k++)
    {
      const char *u = mi->url_list[k];
      if (strncmp (u, "http://", 7) != 0 && strncmp (u, "https://", 8) != 0)
        continue;               /* BEP 19 speaks of HTTP(S) only */
      struct webseed *ws = &w->seeds[w->count++];
      ws->base = strdup (u);
      ws->file_urls = calloc (mi->file_count, sizeof *ws->file_urls);
      bool ok = ws->base != NULL && ws->file_urls != NULL;
      for (size_t i = 0; ok && i < mi->file_count; i++)
        if (!mi->files[i].pad)
          ok = (ws->file_urls[i] = file_url (mi, u, i)) != NULL;
      if (!ok)
        {
          webseeds_free (w);
          return error_set (ENOMEM, "%s: out of memory", label);
        }
    }
  if (w->rc.entry_name == NULL || w->rc.display == NULL
      || w->rc.user_agent == NULL || (ca_file && w->rc.ca_file == NULL))
    {
      webseeds_free (w);
      return error_set (ENOMEM, "%s: out of memory", label);
    }
  if (w->count == 0)
    {
      webseeds_free (w);
      return 0;
    }
  *out = w;
  return 0;
}

void
webseeds_free (struct torrent_webseeds *w)
{
  if (w == NULL)
    return;
  for (size_t k = 0; k < w->count; k++)
    {
      for (size_t i = 0; w->seeds[k].file_urls && i < w->mi->file_count; i++)
        free (w->seeds[k].file_urls[i]);
      free (w->seeds[k].file_urls);
      free (w->seeds[k].base);
    }
  free (w->seeds);
  free (w->rc.entry_name);
  free (w->rc.display);
  free (w->rc.user_agent);
  free (w->rc.ca_file);
  free (w);
}

void
webseeds_stop (struct torrent_webseeds *w)
{
  atomic_store (&w->stopping, true);
}

void *
webseeds_context_new (struct torrent_webseeds *w)
{
  struct http_request_config rc = w->rc;
  rc.url = w->seeds[0].base;
  CURL *c = http_handle_new (&rc, &w->stopping);
  if (c == NULL)
    error_set (ENOMEM, "%s: cannot make a curl handle", w->rc.display);
  return c;
}

void
webseeds_context_free (void *ctx)
{
  curl_easy_cleanup (ctx);
}

/* Fetch [start, end) of the torrent from seed ws into buf, file by file
 * (pad files are zeros).  0 or a negative errno with a message. */
static int
fetch_span (struct torrent_webseeds *w, struct webseed *ws, CURL *c,
            uint8_t *buf, uint64_t start, uint64_t end)
{
  const struct bt_metainfo *mi = w->mi;

  for (size_t i = 0; i < mi->file_count; i++)
    {
      const struct bt_file *f = &mi->files[i];
      uint64_t s = f->offset > start ? f->offset : start;
      uint64_t e = f->offset + f->length < end ? f->offset + f->length : end;
      char why[256] = "";

      if (s >= e)
        continue;
      if (f->pad)
        {
          memset (buf + (s - start), 0, (size_t) (e - s));
          continue;
        }
      struct http_request_config rc = w->rc;
      rc.url = ws->file_urls[i];
      rc.size = f->length;
      curl_easy_setopt (c, CURLOPT_URL, rc.url);
      enum fetch_verdict v = http_fetch_once (&rc, c, (char *) buf
                                              + (s - start),
                                              s - f->offset,
                                              (size_t) (e - s), why,
                                              sizeof why);
      if (atomic_load (&w->stopping))
        return error_set (ECANCELED, "web seed %s: closing", ws->base);
      if (v != FETCH_OK)
        return error_set (EIO, "web seed %s: %s", rc.url, why);
    }
  return 0;
}

/* See torrent_webseed.h. */
int
webseeds_fetch (struct torrent_webseeds *w, void *ctx, uint8_t *buf,
                uint32_t first, uint32_t last)
{
  const struct bt_metainfo *mi = w->mi;
  uint64_t start = (uint64_t) first * mi->piece_length;
  uint64_t end = (uint64_t) last * mi->piece_length
                 + bt_metainfo_piece_size (mi, last);
  int r = error_set (EAGAIN, "no web seed is usable now");

  for (size_t k = 0; k < w->count && !atomic_load (&w->stopping); k++)
    {
      struct webseed *ws = &w->seeds[k];
      if (clock_seconds () < atomic_load (&ws->skip_until))
        continue;
      r = fetch_span (w, ws, ctx, buf, start, end);
      for (uint32_t p = first; r == 0 && p <= last; p++)
        if (!bt_piece_verify (mi, p, buf + ((uint64_t) (p - first)
                                            * mi->piece_length)))
          r = error_set (EIO, "web seed %s: piece %u fails its SHA-1",
                         ws->base, p);
      if (r == 0)
        {
          atomic_fetch_add (&w->pieces, last - first + 1);
          atomic_fetch_add (&w->bytes, end - start);
          return 0;
        }
      if (atomic_load (&w->stopping))
        break;
      atomic_fetch_add (&w->failures, 1);
      atomic_store (&ws->skip_until, clock_seconds () + WEBSEED_BACKOFF);
      log_warning ("%s: %s; not asking it for %.0f s", w->rc.display,
                   error_message (), WEBSEED_BACKOFF);
    }
  memset (buf, 0, (size_t) (end - start));   /* nothing unverified leaks */
  return r;
}

void
webseeds_status (struct torrent_webseeds *w, FILE *out)
{
  fprintf (out, "torrent-webseeds: %zu, %" PRIu64 " pieces, %" PRIu64
           " bytes, %" PRIu64 " failures\n", w->count,
           atomic_load (&w->pieces), atomic_load (&w->bytes),
           atomic_load (&w->failures));
}
