/* diskshelf: `diskshelf status [--json] MOUNTPOINT [ENTRY...]`.
 *
 * The daemon publishes its state as the hidden file
 * MOUNTPOINT/.diskshelf-status: header lines, then one block per entry,
 * "[name]" followed by "key: value" lines that the tree and each layer's
 * status callback write.  This command prints that text (only the named
 * entries when some are given), or with --json turns it into the stable
 * document described in diskshelf(1), JSON STATUS: well-known fields
 * under fixed names (null when the stack has no such thing), and every
 * raw line under "details".
 *
 * Thread model: one thread; a short-lived process.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "daemon.h"
#include "error.h"
#include "text.h"

#define STATUS_JSON_VERSION 1

/* One "key: value" line of a block. */
struct status_line
{
  char *key;
  char *value;
};

/* One block of the status file: the header or an entry. */
struct status_block
{
  char *name;                 /* NULL for the header block */
  struct status_line *lines;
  size_t nlines;
};

struct status_doc
{
  struct status_block *blocks;
  size_t nblocks;
};

/* Read the whole status file of a mount; malloc'd text. */
static int
read_status_file (const char *mountpoint, char **out)
{
  char path[4096];
  char *text = NULL;
  size_t len = 0;
  FILE *mem, *fp;
  char buf[65536];
  size_t n;

  snprintf (path, sizeof path, "%s/%s", mountpoint, STATUS_FILE_NAME);
  fp = fopen (path, "re");
  if (fp == NULL)
    return error_set (errno, "%s is not a diskshelf mount (no %s: %s)",
                      mountpoint, STATUS_FILE_NAME, strerror (errno));
  mem = open_memstream (&text, &len);
  if (mem == NULL)
    {
      fclose (fp);
      return error_set (ENOMEM, "out of memory");
    }
  while ((n = fread (buf, 1, sizeof buf, fp)) > 0)
    fwrite (buf, 1, n, mem);
  fclose (fp);
  fclose (mem);
  *out = text;
  return 0;
}

/* Start a new block named name (NULL for the header). */
static struct status_block *
new_block (struct status_doc *doc, const char *name)
{
  struct status_block *grown = realloc (doc->blocks, (doc->nblocks + 1)
                                        * sizeof *grown);
  struct status_block *b;

  if (grown == NULL)
    return NULL;
  doc->blocks = grown;
  b = &doc->blocks[doc->nblocks++];
  memset (b, 0, sizeof *b);
  if (name && (b->name = strdup (name)) == NULL)
    {
      doc->nblocks--;
      return NULL;
    }
  return b;
}

/* Add a key and value to a block. */
static int
add_line (struct status_block *b, const char *key, const char *value)
{
  struct status_line *grown = realloc (b->lines, (b->nlines + 1)
                                       * sizeof *grown);
  if (grown == NULL)
    return -ENOMEM;
  b->lines = grown;
  b->lines[b->nlines].key = strdup (key);
  b->lines[b->nlines].value = strdup (value);
  if (b->lines[b->nlines].key == NULL || b->lines[b->nlines].value == NULL)
    {
      free (b->lines[b->nlines].key);
      free (b->lines[b->nlines].value);
      return -ENOMEM;
    }
  b->nlines++;
  return 0;
}

/* Split the status text into blocks of key/value lines.  Lines that are
 * not "key: value" are kept under the key "text". */
static int
parse_status (char *text, struct status_doc *doc)
{
  struct status_block *b;
  char *save = NULL;

  memset (doc, 0, sizeof *doc);
  b = new_block (doc, NULL);
  if (b == NULL)
    return error_set (ENOMEM, "out of memory");
  for (char *line = strtok_r (text, "\n", &save); line;
       line = strtok_r (NULL, "\n", &save))
    {
      size_t len = strlen (line);
      char *colon;

      if (len >= 2 && line[0] == '[' && line[len - 1] == ']')
        {
          line[len - 1] = '\0';
          b = new_block (doc, line + 1);
          if (b == NULL)
            return error_set (ENOMEM, "out of memory");
          continue;
        }
      colon = strstr (line, ": ");
      if (colon && colon > line && strcspn (line, " ") >= (size_t) (colon - line))
        {
          *colon = '\0';
          if (add_line (b, line, colon + 2) < 0)
            return error_set (ENOMEM, "out of memory");
        }
      else if (add_line (b, "text", text_trim (line)) < 0)
        return error_set (ENOMEM, "out of memory");
    }
  return 0;
}

/* Free what parse_status made. */
static void
free_status (struct status_doc *doc)
{
  for (size_t i = 0; i < doc->nblocks; i++)
    {
      for (size_t j = 0; j < doc->blocks[i].nlines; j++)
        {
          free (doc->blocks[i].lines[j].key);
          free (doc->blocks[i].lines[j].value);
        }
      free (doc->blocks[i].lines);
      free (doc->blocks[i].name);
    }
  free (doc->blocks);
}

/* The first value of key in a block, or NULL. */
static const char *
get (const struct status_block *b, const char *key)
{
  for (size_t i = 0; i < b->nlines; i++)
    if (strcmp (b->lines[i].key, key) == 0)
      return b->lines[i].value;
  return NULL;
}

/* The leading whole number of a value ("12 bytes" -> 12). */
static bool
get_number (const struct status_block *b, const char *key, uint64_t *out)
{
  const char *v = get (b, key);
  char *end;

  if (v == NULL || *v < '0' || *v > '9')
    return false;
  errno = 0;
  *out = strtoull (v, &end, 10);
  return errno == 0;
}

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
  if (get_number (b, key, &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
}

/* The first of several keys that a block has, or NULL. */
static const char *
first_key (const struct status_block *b, const char *const *keys)
{
  for (; *keys; keys++)
    if (get (b, *keys))
      return *keys;
  return NULL;
}

/* ok, opening, broken or degraded, with the reason when not ok. */
static const char *
entry_state (const struct status_block *b, const char **reason)
{
  const char *state = get (b, "state");
  const char *http = get (b, "http-state");
  const char *nbd = get (b, "nbd-connected");
  const char *xz = get (b, "xz-error");

  *reason = get (b, "reason");
  if (*reason == NULL)
    *reason = get (b, "broken");
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
      *reason = get (b, "nbd-last-loss");
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
  const char *present = get (b, "cache-present");
  unsigned long long have, total;

  fputs (",\n      \"cache\": ", out);
  if (present == NULL
      || sscanf (present, "%llu of %llu", &have, &total) != 2)
    {
      fputs ("null", out);
      return;
    }
  fprintf (out, "{ \"directory\": ");
  json_string (out, get (b, "cache"));
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
                                                "nbd-in-flight", NULL };
  static const char *const retry_keys[] = { "http-retries",
                                            "nbd-reconnects", NULL };
  const char *reason, *state = entry_state (b, &reason);
  const char *stack = get (b, "stack");
  const char *last_error = get (b, "last-error");
  const char *key;
  uint64_t n;

  fputs ("    {\n      \"name\": ", out);
  json_string (out, b->name);
  fputs (",\n      \"source\": ", out);
  json_string (out, get (b, "source"));
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
  fputs (get (b, "mode") && strcmp (get (b, "mode"), "read-write") == 0
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
      json_string (out, get (b, "last-error-time"));
      fputs (" }", out);
    }
  else
    fputs ("null", out);
  json_number_field (out, "nbd_connections", b, "nbd-connections");
  fputs (",\n      \"torrent\": { \"peers\": ", out);
  if (get_number (b, "torrent-peers", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (", \"pieces_have\": ", out);
  if (get_number (b, "torrent-pieces-have", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (", \"pieces_total\": ", out);
  if (get_number (b, "torrent-pieces", &n))
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

/* True when the block is an entry the user asked for (or none named). */
static bool
wanted (const struct status_block *b, const char *mountpoint, int nnames,
        char **names, bool *found)
{
  size_t mlen = strlen (mountpoint);

  if (b->name == NULL)
    return false;
  if (nnames == 0)
    return true;
  for (int i = 0; i < nnames; i++)
    {
      const char *n = names[i];
      /* Accept "a/b.img", "/a/b.img" and "MOUNTPOINT/a/b.img". */
      if (strncmp (n, mountpoint, mlen) == 0 && n[mlen] == '/')
        n += mlen;
      while (*n == '/')
        n++;
      if (strcmp (n, b->name) == 0)
        {
          found[i] = true;
          return true;
        }
    }
  return false;
}

/* The header and the wanted entries as one JSON document. */
static void
print_json (FILE *out, const struct status_doc *doc, const char *mountpoint,
            int nnames, char **names, bool *found)
{
  const struct status_block *h = &doc->blocks[0];
  bool first = true;
  uint64_t n;

  fprintf (out, "{\n  \"version\": %d,\n  \"mountpoint\": ",
           STATUS_JSON_VERSION);
  json_string (out, get (h, "mountpoint") ? get (h, "mountpoint")
               : mountpoint);
  fputs (",\n  \"catalog\": ", out);
  json_string (out, get (h, "catalog"));
  fputs (",\n  \"pid\": ", out);
  if (get_number (h, "pid", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (",\n  \"entries_ok\": ", out);
  if (get_number (h, "entries", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (",\n  \"entries_broken\": ", out);
  if (get_number (h, "broken", &n))
    fprintf (out, "%" PRIu64, n);
  else
    fputs ("null", out);
  fputs (",\n  \"entries\": [", out);
  for (size_t i = 1; i < doc->nblocks; i++)
    {
      if (!wanted (&doc->blocks[i], mountpoint, nnames, names, found))
        continue;
      fputs (first ? "\n" : ",\n", out);
      json_entry (out, &doc->blocks[i]);
      first = false;
    }
  fputs (first ? "]\n}\n" : "\n  ]\n}\n", out);
}

/* The header and the wanted entries as the daemon wrote them. */
static void
print_text (FILE *out, const struct status_doc *doc, const char *mountpoint,
            int nnames, char **names, bool *found)
{
  for (size_t i = 0; i < doc->nblocks; i++)
    {
      const struct status_block *b = &doc->blocks[i];

      if (i > 0 && !wanted (b, mountpoint, nnames, names, found))
        continue;
      if (b->name)
        fprintf (out, "[%s]\n", b->name);
      for (size_t j = 0; j < b->nlines; j++)
        {
          if (strcmp (b->lines[j].key, "text") == 0)
            fprintf (out, "%s\n", b->lines[j].value);
          else
            fprintf (out, "%s: %s\n", b->lines[j].key, b->lines[j].value);
        }
      fputc ('\n', out);
    }
}

/* Render status text (modified in place) as text or JSON. */
int
status_render (char *text, bool json, const char *mountpoint, int nnames,
               char **names, bool *found, FILE *out)
{
  struct status_doc doc;
  int r = parse_status (text, &doc);

  if (r == 0)
    {
      if (json)
        print_json (out, &doc, mountpoint, nnames, names, found);
      else
        print_text (out, &doc, mountpoint, nnames, names, found);
    }
  free_status (&doc);
  return r;
}

/* Entry point of `diskshelf status`. */
int
status_command (int argc, char **argv)
{
  bool json = false;
  char *text = NULL, *mountpoint;
  bool *found;
  int status = 0, nnames;

  if (argc >= 1 && strcmp (argv[0], "--json") == 0)
    {
      json = true;
      argc--;
      argv++;
    }
  if (argc < 1 || argv[0][0] == '-')
    {
      fprintf (stderr, "usage: diskshelf status [--json] MOUNTPOINT"
               " [ENTRY...]\n");
      return 2;
    }
  mountpoint = realpath (argv[0], NULL);
  if (mountpoint == NULL)
    {
      fprintf (stderr, "diskshelf: %s: %s\n", argv[0], strerror (errno));
      return 1;
    }
  if (read_status_file (mountpoint, &text) < 0)
    {
      fprintf (stderr, "diskshelf: %s\n", error_message ());
      free (mountpoint);
      return 1;
    }
  nnames = argc - 1;
  found = calloc ((size_t) nnames + 1, sizeof *found);
  if (found == NULL
      || status_render (text, json, mountpoint, nnames, argv + 1, found,
                        stdout) < 0)
    {
      fprintf (stderr, "diskshelf: out of memory\n");
      free (found);
      free (text);
      free (mountpoint);
      return 1;
    }
  for (int i = 0; i < nnames; i++)
    if (!found[i])
      {
        fprintf (stderr, "diskshelf: %s: no such entry in %s (see"
                 " `diskshelf status %s`)\n", argv[1 + i], mountpoint,
                 mountpoint);
        status = 1;
      }
  free (found);
  free (text);
  free (mountpoint);
  return status;
}
