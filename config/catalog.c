/* diskshelf: walking the catalog directory and parsing every entry. */
#include "catalog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

#define MAX_DEPTH 32

/* Append text to the catalog's error rows. */
static void
add_errors (struct catalog *c, const char *text)
{
  size_t old = c->errors ? strlen (c->errors) : 0;
  size_t add = strlen (text);
  char *grown = realloc (c->errors, old + add + 2);

  if (grown == NULL)
    return;
  memcpy (grown + old, text, add + 1);
  if (add == 0 || text[add - 1] != '\n')
    strcpy (grown + old + add, "\n");
  c->errors = grown;
}

/* Keep one parsed entry. */
static int
add_entry (struct catalog *c, struct entry_config *e)
{
  struct entry_config **grown
    = realloc (c->entries, (c->count + 1) * sizeof *grown);

  if (grown == NULL)
    return error_set (ENOMEM, "out of memory");
  c->entries = grown;
  c->entries[c->count++] = e;
  return 0;
}

/* Sort helper: entries by name, so listings are stable. */
static int
compare_names (const void *a, const void *b)
{
  const struct entry_config *const *x = a, *const *y = b;
  return strcmp ((*x)->name, (*y)->name);
}

/* Parse one NAME.conf found at path, with mount name `name`. */
static void
read_entry (struct catalog *c, const char *path, const char *name)
{
  struct entry_config *e;
  char *errors = NULL;

  if (entry_parse (path, name, &e, &errors) < 0)
    {
      c->error_count++;
      add_errors (c, errors ? errors : error_message ());
      free (errors);
      return;
    }
  if (add_entry (c, e) < 0)
    entry_free (e);
}

/* Walk dir (absolute path abs, mount prefix rel) recursively. */
static int
walk (struct catalog *c, const char *abs, const char *rel, int depth)
{
  DIR *d;
  struct dirent *de;

  if (depth > MAX_DEPTH)
    {
      char row[4096];
      snprintf (row, sizeof row, "%s: nested too deeply; skipped", abs);
      add_errors (c, row);
      c->error_count++;
      return 0;
    }
  d = opendir (abs);
  if (d == NULL)
    return error_set (errno, "%s: %s", abs, strerror (errno));
  while ((de = readdir (d)) != NULL)
    {
      char *path = NULL, *name = NULL;
      struct stat st, lst;
      size_t len = strlen (de->d_name);

      if (de->d_name[0] == '.')
        continue;
      if (asprintf (&path, "%s/%s", abs, de->d_name) < 0)
        continue;
      if (lstat (path, &lst) < 0 || stat (path, &st) < 0)
        {
          free (path);
          continue;
        }
      if (S_ISDIR (st.st_mode) && !S_ISLNK (lst.st_mode))
        {
          if (asprintf (&name, "%s%s/", rel, de->d_name) >= 0)
            walk (c, path, name, depth + 1);
        }
      else if (S_ISREG (st.st_mode) && len > 5
               && strcmp (de->d_name + len - 5, ".conf") == 0)
        {
          if (asprintf (&name, "%s%.*s", rel, (int) (len - 5), de->d_name)
              >= 0)
            read_entry (c, path, name);
        }
      free (name);
      free (path);
    }
  closedir (d);
  return 0;
}

/* Read the whole catalog. */
int
catalog_read (const char *dir, struct catalog **out)
{
  struct catalog *c = calloc (1, sizeof *c);
  int r;

  if (c == NULL)
    return error_set (ENOMEM, "out of memory");
  r = walk (c, dir, "", 0);
  if (r < 0)
    {
      catalog_free (c);
      return error_prefix (r, "catalog");
    }
  if (c->count > 1)
    qsort (c->entries, c->count, sizeof *c->entries, compare_names);
  *out = c;
  return 0;
}

/* Free the catalog and everything in it. */
void
catalog_free (struct catalog *c)
{
  if (c == NULL)
    return;
  for (size_t i = 0; i < c->count; i++)
    entry_free (c->entries[i]);
  free (c->entries);
  free (c->errors);
  free (c);
}
