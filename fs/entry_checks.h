/* diskshelf: the checks of an entry made before its stack is opened, and
 * the one format of a broken entry's row, shared by the mount (tree.c)
 * and `diskshelf check` (check.c) so they agree on what is broken and say
 * it the same way.
 *
 * Thread model: safe from any thread.
 * Ownership: entry_problem_row returns a malloc'd string.
 */
#ifndef DISKSHELF_FS_ENTRY_CHECKS_H
#define DISKSHELF_FS_ENTRY_CHECKS_H

#include "entry.h"

/* Checks that need no network and start nothing: a captive command is
 * installed; an NBD URI parses; TLS settings (URI tls-* parameters, or
 * the ca-file, ca-path and tls-verify keys) sit on a TLS source.
 * Returns 0 or a negative errno with a recorded message. */
int entry_static_check (const struct entry_config *e);

/* "FILE:LINE: message\n" for an entry that failed to open, LINE being
 * that of its source or command key (conf_text may be NULL: the file is
 * read again).  NULL when out of memory. */
char *entry_problem_row (const struct entry_config *e, const char *conf_text,
                         const char *message);

#endif
