/* diskshelf: `diskshelf status [--json] MOUNTPOINT [ENTRY...]`.
 *
 * The daemon publishes its state as the hidden file
 * MOUNTPOINT/.diskshelf-status: header lines, then one block per entry,
 * "[name]" followed by "key: value" lines that the tree and each layer's
 * status callback write.  This command prints that text (only the named
 * entries when some are given), or with --json the stable document of
 * status-json.c.
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
#include "status-doc.h"

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

/* The header and the wanted entries as the daemon wrote them. */
static void
print_text (FILE *out, const struct status_doc *doc, const char *mountpoint,
            int nnames, char **names, bool *found)
{
  for (size_t i = 0; i < doc->nblocks; i++)
    {
      const struct status_block *b = &doc->blocks[i];

      if (i > 0 && !status_block_wanted (b, mountpoint, nnames, names, found))
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
  int r = status_doc_parse (text, &doc);

  if (r == 0)
    {
      if (json)
        status_doc_print_json (out, &doc, mountpoint, nnames, names, found);
      else
        print_text (out, &doc, mountpoint, nnames, names, found);
    }
  status_doc_free (&doc);
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
