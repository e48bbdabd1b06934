/* diskshelf: the stable JSON form of `diskshelf status --json`.
 *
 * Well-known fields under fixed names (null when the stack has no such
 * thing) and every raw line under "details"; documented in diskshelf(1),
 * STATUS.  Thread model: no shared state except entry_state's buffer
 * (one caller at a time; the command is single-threaded). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "status-doc.h"
#include "text.h"

/* The length of the valid UTF-8 sequence at p (1-4), or 0. */
static size_t
utf8_length (const unsigned char *p)
{
  size_t n;
  unsigned cp;

  if (p[0] < 0x80)
    return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf)
    n = 2, cp = p[0] & 0x1f;
  else if (p[0] >= 0xe0 && p[0] <= 0xef)
    n = 3, cp = p[0] & 0x0f;
  else if (p[0] >= 0xf0 && p[0] <= 0xf4)
    n = 4, cp = p[0] & 0x07;
  else
    return 0;
  for (size_t i = 1; i < n; i++)
    {
      if ((p[i] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
      || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

/* Write s as a JSON string; bytes that are not UTF-8 become U+FFFD, so
 * the document always parses. */
static void
json_string (FILE *out, const char *s)
{
  if (s == NULL)
    {
      fputs ("null", out);
      return;
    }
  fputc ('"', out);
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    {
      size_t n = utf8_length (p);

      if (n == 0)
        fputs ("\\ufffd", out);
      else if (n > 1)
        {
          fwrite (p, 1, n, out);
          p += n - 1;
        }
      else if (*p == '"' || *p == '\\')
        fprintf (out, "\\%c", *p);
      else if (*p == '\n')
        fputs ("\\n", out);
      else if (*p == '\t')
        fputs ("\\t", out);
      else if (*p < 0x20)
        fprintf (out, "\\u%04x", *p);
      else
        fputc (*p, out);
    }
  fputc ('"', out);
}

/* Write a number field, or null when the stack has no such value. */
static void
json_number_field (FILE *out, const char *name, const struct status_block *b,
                   const char *key)
{
  uint64_t n;

  fprintf (out, ",\n      \"%s\": ", name);
  if (status_get_number (b, key, &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
}

/* The first of several keys that a block has, or NULL. */
static const char *
first_key (const struct status_block *b, const char *const *keys)
{
  for (; *keys; keys++)
    if (status_get (b, *keys))
      return *keys;
  return NULL;
}

/* ok, opening, broken or degraded, with the reason when not ok. */
static const char *
entry_state (const struct status_block *b, const char **reason)
{
  const char *state = status_get (b, "state");
  const char *http = status_get (b, "http-state");
  const char *nbd = status_get (b, "nbd-connected");
  const char *xz = status_get (b, "xz-error");

  *reason = status_get (b, "reason");
  if (*reason == NULL)
    *reason = status_get (b, "broken");
  if (state)
    {
      /* "broken: why" style values keep their first word as the state. */
      static char word[32];
      size_t n = strcspn (state, " (:");
      if (n >= sizeof word)
        n = sizeof word - 1;
      memcpy (word, state, n);
      word[n] = '\0';
      if (*reason == NULL && state[n])
        *reason = text_trim ((char *) state + n + 1);
      return word;
    }
  if (http && strcmp (http, "ok") != 0)
    {
      *reason = http;
      return "degraded";
    }
  if (nbd && strcmp (nbd, "no") == 0)
    {
      *reason = status_get (b, "nbd-last-loss");
      if (*reason == NULL)
        *reason = "not connected to the NBD server";
      return "degraded";
    }
  if (xz)
    {
      *reason = xz;
      return "degraded";
    }
  return "ok";
}

/* The cache fill of the topmost cached object ("cache-present: A of B"). */
static void
json_cache (FILE *out, const struct status_block *b)
{
  const char *present = status_get (b, "cache-present");
  unsigned long long have, total;

  fputs (",\n      \"cache\": ", out);
  if (present == NULL
      || sscanf (present, "%llu of %llu", &have, &total) != 2)
    {
      fputs ("null", out);
      return;
    }
  fprintf (out, "{ \"directory\": ");
  json_string (out, status_get (b, "cache"));
  fprintf (out, ", \"present_bytes\": %llu, \"object_bytes\": %llu,"
           " \"fill\": %.4f }", have, total,
           total ? (double) have / (double) total : 1.0);
}

/* One entry block as a JSON object. */
static void
json_entry (FILE *out, const struct status_block *b)
{
  static const char *const fetched_keys[] = { "http-fetched", NULL };
  static const char *const request_keys[] = { "http-requests",
                                              "nbd-requests", NULL };
  static const char *const in_flight_keys[] = { "http-pending-chunks",
                                                "torrent-pending-chunks",
                                                "nbd-in-flight", NULL };
  static const char *const shared_keys[] = { "http-shared-by",
                                             "torrent-shared-by", NULL };
  static const char *const retry_keys[] = { "http-retries",
                                            "nbd-reconnects", NULL };
  const char *reason, *state = entry_state (b, &reason);
  const char *stack = status_get (b, "stack");
  const char *last_error = status_get (b, "last-error");
  const char *key;
  uint64_t n;

  fputs ("    {\n      \"name\": ", out);
  json_string (out, b->name);
  fputs (",\n      \"source\": ", out);
  json_string (out, status_get (b, "source"));
  fputs (",\n      \"layers\": [", out);
  if (stack)
    {
      char *copy = strdup (stack), *save = NULL;
      bool first = true;
      for (char *w = copy ? strtok_r (copy, " <", &save) : NULL; w;
           w = strtok_r (NULL, " <", &save))
        {
          fputs (first ? "" : ", ", out);
          json_string (out, w);
          first = false;
        }
      free (copy);
    }
  fputs ("]", out);
  json_number_field (out, "size", b, "size");
  fputs (",\n      \"writable\": ", out);
  fputs (status_get (b, "mode") && strcmp (status_get (b, "mode"), "read-write") == 0
         ? "true" : "false", out);
  fputs (",\n      \"state\": ", out);
  json_string (out, state);
  fputs (",\n      \"reason\": ", out);
  json_string (out, strcmp (state, "ok") == 0 ? NULL : reason);
  json_cache (out, b);
  key = first_key (b, fetched_keys);
  json_number_field (out, "bytes_fetched", b, key ? key : "-");
  key = first_key (b, request_keys);
  json_number_field (out, "requests", b, key ? key : "-");
  key = first_key (b, in_flight_keys);
  json_number_field (out, "requests_in_flight", b, key ? key : "-");
  key = first_key (b, retry_keys);
  json_number_field (out, "retries", b, key ? key : "-");
  json_number_field (out, "errors", b, "errors");
  fputs (",\n      \"last_error\": ", out);
  if (last_error)
    {
      fputs ("{ \"message\": ", out);
      json_string (out, last_error);
      fputs (", \"time\": ", out);
      json_string (out, status_get (b, "last-error-time"));
      fputs (" }", out);
    }
  else
    fputs ("null", out);
  json_number_field (out, "nbd_connections", b, "nbd-connections");
  key = first_key (b, shared_keys);
  json_number_field (out, "shared_by", b, key ? key : "-");
  fputs (",\n      \"torrent\": { \"peers\": ", out);
  if (status_get_number (b, "torrent-peers", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (", \"pieces_have\": ", out);
  if (status_get_number (b, "torrent-pieces-have", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (", \"pieces_total\": ", out);
  if (status_get_number (b, "torrent-pieces", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (" },\n      \"details\": {", out);
  for (size_t i = 0; i < b->nlines; i++)
    {
      fputs (i ? ",\n        " : "\n        ", out);
      json_string (out, b->lines[i].key);
      fputs (": ", out);
      json_string (out, b->lines[i].value);
    }
  fputs (b->nlines ? "\n      }\n    }" : "}\n    }", out);
}

/* The header and the wanted entries as one JSON document. */
void
status_doc_print_json (FILE *out, const struct status_doc *doc,
                       const char *mountpoint, int nnames, char **names,
                       bool *found)
{
  const struct status_block *h = &doc->blocks[0];
  bool first = true;
  uint64_t n;

  fprintf (out, "{\n  \"version\": %d,\n  \"mountpoint\": ",
           STATUS_JSON_VERSION);
  json_string (out, status_get (h, "mountpoint") ? status_get (h, "mountpoint")
               : mountpoint);
  fputs (",\n  \"catalog\": ", out);
  json_string (out, status_get (h, "catalog"));
  fputs (",\n  \"pid\": ", out);
  if (status_get_number (h, "pid", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  /* "entries" counts open and opening entries; "opening" the latter. */
  uint64_t opening = 0;
  bool have_opening = status_get_number (h, "opening", &opening);
  fputs (",\n  \"entries_ok\": ", out);
  if (status_get_number (h, "entries", &n))
    fprintf (out, "%" PRIu64, n >= opening ? n - opening : 0);
  else
    fputs ("null", out);
  fputs (",\n  \"entries_opening\": ", out);
  if (have_opening)
    fprintf (out, "%" PRIu64, opening);
  else
    fputs ("null", out);
  fputs (",\n  \"entries_broken\": ", out);
  if (status_get_number (h, "broken", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (",\n  \"entries\": [", out);
  for (size_t i = 1; i < doc->nblocks; i++)
    {
      if (!status_block_wanted (&doc->blocks[i], mountpoint, nnames, names, found))
        continue;
      fputs (first ? "\n" : ",\n", out);
      json_entry (out, &doc->blocks[i]);
      first = false;
    }
  fputs (first ? "]\n}\n" : "\n  ]\n}\n", out);
}
