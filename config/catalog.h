/* diskshelf: reading a whole catalog directory.
 *
 * Every regular file CATALOG/.../NAME.conf is an entry that appears as
 * MOUNTPOINT/.../NAME.  Hidden files and directories (".name") and other
 * files are ignored; symbolic links to files are followed, links to
 * directories are not (no loops).
 *
 * Ownership: catalog_read returns a struct catalog freed by catalog_free;
 * it owns its entries and its error text.
 */
#ifndef DISKSHELF_CATALOG_H
#define DISKSHELF_CATALOG_H

#include <stddef.h>

#include "entry.h"

struct catalog
{
  struct entry_config **entries;   /* the entries that parsed */
  size_t count;
  char *errors;                    /* "FILE:LINE: message\n" rows, or NULL */
  size_t error_count;              /* entry files that failed to parse */
};

/* Read every entry under dir.  A broken entry is recorded in errors and
 * left out; only a catalog directory that cannot be read is an error
 * (negative errno, message recorded). */
int catalog_read (const char *dir, struct catalog **out);

void catalog_free (struct catalog *c);

#endif
