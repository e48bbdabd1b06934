/* diskshelf: the pool that opens entries' stacks in the background.
 *
 * A mount or a reload lists every entry at once and hands the new ones
 * whose size the disk cache does not remember to this pool, which opens
 * each stack once to learn its size and closes it again: an entry
 * nobody opened holds no connection, thread or buffer.  The first open
 * of a file asks the pool to open the stack for use; it then stays open
 * for the entry's life.  OPENER_THREADS threads do the work, at most
 * that many opens at a time (so at most that many connections are being
 * set up).  An open
 * that fails leaves the entry BROKEN and is retried after a back-off
 * (1 s, doubling, at most OPENER_BACKOFF_MAX_S); a retry that succeeds
 * makes the entry OK in place, without a reload.  An entry no tree holds
 * any more is dropped from the queue at its next turn.
 *
 * Thread model: every function is safe from any thread; one mutex
 * inside opener.c protects the queue.  The threads start with the first
 * submitted entry (after the daemon forked).  opener_stop waits for
 * opens in progress, each bounded by its entry's timeout.
 *
 * Ownership: the queue holds one reference on every queued entry.
 */
#ifndef DISKSHELF_FS_OPENER_H
#define DISKSHELF_FS_OPENER_H

#include "tree.h"

#define OPENER_THREADS 16
#define OPENER_BACKOFF_MAX_S 30

/* A stack opened to learn a size is kept this long as the entry's spare,
 * so that a file opened soon after (a mount, then a use) does not open
 * it a second time; at most OPENER_SPARES_MAX entries keep one. */
#define OPENER_SPARE_LINGER_S 10
#define OPENER_SPARES_MAX 64

/* Queue an entry for opening now (takes a reference): to learn its
 * size and close it again (use false), or to keep its stack open for
 * the files opening it (use true). */
void opener_submit (struct fs_entry *e, bool use);

/* Close e's spare stack, if any (at its linger time, or when e is
 * freed). */
void fs_entry_drop_spare (struct fs_entry *e);

/* fs_entry_wait_open took e's spare as its stack. */
void opener_spare_taken (void);

/* Move a broken entry's pending retry to now (an open is waiting). */
void opener_retry_now (struct fs_entry *e);

/* Tell the kernel that an entry's attributes changed (its size or mode
 * is no longer what getattr showed before the open); provided by
 * fs/ops.c, called by an opener thread, never inside a FUSE request. */
void fs_entry_attributes_changed (struct fs_entry *e);

/* Stop the threads and drop the queue (at exit). */
void opener_stop (void);

#endif
