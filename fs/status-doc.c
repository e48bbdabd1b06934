/* diskshelf: parsing a mount's status file (see status-doc.h). */
#include "status-doc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "text.h"

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
int
status_doc_parse (char *text, struct status_doc *doc)
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

/* Free what status_doc_parse made. */
void
status_doc_free (struct status_doc *doc)
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
const char *
status_get (const struct status_block *b, const char *key)
{
  for (size_t i = 0; i < b->nlines; i++)
    if (strcmp (b->lines[i].key, key) == 0)
      return b->lines[i].value;
  return NULL;
}

/* The leading whole number of a value ("12 bytes" -> 12). */
bool
status_get_number (const struct status_block *b, const char *key, uint64_t *out)
{
  const char *v = status_get (b, key);
  char *end;

  if (v == NULL || *v < '0' || *v > '9')
    return false;
  errno = 0;
  *out = strtoull (v, &end, 10);
  return errno == 0;
}

/* True when the block is an entry the user asked for (or none named). */
bool
status_block_wanted (const struct status_block *b, const char *mountpoint, int nnames,
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
