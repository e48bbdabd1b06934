/* diskshelf: the `check` subcommand (fs/check.c).
 *
 * Thread model: called once from main, before any other thread exists.
 */
#ifndef DISKSHELF_FS_CHECK_H
#define DISKSHELF_FS_CHECK_H

/* `diskshelf check [--open] [--timeout=SECONDS] CATALOG`, argv after the
 * subcommand.  Returns the exit status: 0 all entries ok, 1 some broken,
 * 2 usage. */
int run_check (int argc, char **argv);

#endif
