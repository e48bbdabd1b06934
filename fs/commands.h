/* diskshelf: the subcommands that talk to a running mount.
 *
 * Each takes the arguments after its name and returns the process exit
 * code (0 ok, 1 failure, 2 usage).
 *
 * Thread model: run on the main thread of a short-lived process.
 */
#ifndef DISKSHELF_COMMANDS_H
#define DISKSHELF_COMMANDS_H

/* diskshelf status [--json] MOUNTPOINT [ENTRY...] (fs/status-cmd.c) */
int status_command (int argc, char **argv);

/* diskshelf prefetch [--background] FILE... (fs/prefetch-cmd.c) */
int prefetch_command (int argc, char **argv);

#endif
