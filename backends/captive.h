/* diskshelf: what the captive-server layer (captive.c) offers besides its
 * constructor (declared in stack.h).
 *
 * Thread model: safe from any thread.
 */
#ifndef DISKSHELF_CAPTIVE_H
#define DISKSHELF_CAPTIVE_H

/* The check the layer makes before starting `command = ARGV`: 0 when
 * argv[0] names an executable (directly or on $PATH), else a negative
 * errno with a message saying what to change.  Used by `diskshelf check`
 * so it refuses what the mount refuses. */
int captive_command_check (char *const *argv);

#endif
