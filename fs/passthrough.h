/* diskshelf: FUSE passthrough (the kernel reads a backing file itself).
 *
 * With passthrough, an open reply names a backing file registered with
 * the kernel, and the kernel then serves read, write, splice and mmap on
 * that open file from the backing file without sending READ requests:
 * warm reads run at the speed of the backing file's page cache.  Linux
 * 6.9+ (CONFIG_FUSE_PASSTHROUGH) has it; libfuse gained an API for it in
 * 3.16, and Debian 12 ships 3.14, so this module does the three steps
 * itself:
 *
 * 1. INIT (passthrough_negotiate): libfuse 3.14 answers INIT with
 *    FUSE_PASSTHROUGH off and max_stack_depth 0.  Between
 *    fuse_session_mount and the loop, we read the kernel's INIT,
 *    let libfuse answer it into a socketpair standing in for /dev/fuse,
 *    add FUSE_PASSTHROUGH and max_stack_depth to that answer, and write
 *    it to the real /dev/fuse fd.  Only when the kernel offered
 *    FUSE_PASSTHROUGH, the daemon can register backing files
 *    (CAP_SYS_ADMIN) and libfuse did not turn on the writeback cache
 *    (the kernel refuses passthrough with it).
 * 2. Backing files (passthrough_backing_get/_put): FUSE_DEV_IOC_BACKING_
 *    OPEN on the /dev/fuse fd gives a backing id; one registration per
 *    backing file (device and inode), reference-counted, closed when the
 *    last open using it is released.
 * 3. The open reply (passthrough_reply_open): fuse_open_out with
 *    FOPEN_PASSTHROUGH and the backing id, sent with fuse_reply_buf
 *    (libfuse 3.14's fuse_reply_open has no field for the id).
 *
 * The kernel's rule for one inode (fs/fuse/iomode.c): its opens are all
 * passthrough (to one backing file) or none is, while any is open; an
 * open that breaks the rule fails with EIO in the caller's open().
 * Opens with FOPEN_DIRECT_IO and without passthrough do not count for
 * it, except that they too fail while a passthrough open exists.
 * struct passthrough_inode keeps the daemon on the right side of it:
 * while an inode has passthrough opens, every new open of it is
 * passthrough too (same backing file, the same bytes); while it has
 * cached opens, a new open is served with READs even if it could go
 * passthrough.
 *
 * Stack depth: max_stack_depth is PASSTHROUGH_STACK_DEPTH (2), so the
 * backing file may live on overlayfs (depth 1) as well as on a plain
 * filesystem; the price is that the mount itself can no longer be a
 * lower layer of an overlayfs.
 *
 * Thread model: passthrough_negotiate runs once, in the main thread,
 * before the loop starts any worker.  Everything else is safe from any
 * thread (one lock for the backing registry; one per inode record).
 * Ownership: the module keeps no pointer to the session after
 * negotiate; it uses the session's fd number, which stays the /dev/fuse
 * fd for the session's life.
 */
#ifndef DISKSHELF_FS_PASSTHROUGH_H
#define DISKSHELF_FS_PASSTHROUGH_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define PASSTHROUGH_STACK_DEPTH 2

/* Answer the kernel's INIT on se's /dev/fuse fd through libfuse and add
 * passthrough to the answer when the kernel and the process allow it.
 * Call after fuse_session_mount and before fuse_session_loop*.  Logs one
 * line saying whether passthrough is on and why not.  Returns 0 (also
 * when passthrough stays off) or a negative errno when the INIT
 * exchange itself failed (then the session is unusable: unmount). */
int passthrough_negotiate (struct fuse_session *se);

/* True once passthrough_negotiate turned passthrough on. */
bool passthrough_enabled (void);

/* Register the file open on fd as a backing file, or take one more
 * reference on its registration: 0 and *backing_id, or a negative
 * errno (-ENOTSUP when passthrough is off; -EPERM without
 * CAP_SYS_ADMIN; -ELOOP when the file's filesystem stack is too deep).
 * fd stays the caller's; the kernel keeps its own reference. */
int passthrough_backing_get (int fd, uint32_t *backing_id);

/* Drop one reference taken by passthrough_backing_get; the last one
 * unregisters the backing file (opens already using it keep working). */
void passthrough_backing_put (uint32_t backing_id);

/* The session's loop ended and its /dev/fuse fd is closed: releases
 * still to come (open files freed at exit) only drop their records and
 * what lent their files.  Call on the main thread after the loop. */
void passthrough_session_ended (void);

/* Number of registered backing files (for tests and status). */
unsigned passthrough_backing_count (void);

/* Reply to an OPEN with passthrough to backing_id.  open_flags are the
 * FOPEN_* flags (FOPEN_PASSTHROUGH is added).  The kernel (6.18, found
 * by tests/test_passthrough.py) takes only FOPEN_DIRECT_IO,
 * FOPEN_PARALLEL_DIRECT_WRITES and FOPEN_NOFLUSH besides: with
 * FOPEN_KEEP_CACHE the caller's open() fails with EIO; with
 * FOPEN_DIRECT_IO, read and write come to the daemon as READ/WRITE and
 * only mmap passes through.  So a read-only passthrough open wants 0.
 * Returns what fuse_reply_buf returns. */
int passthrough_reply_open (fuse_req_t req, uint64_t fh, uint32_t open_flags,
                            uint32_t backing_id);

/* What lends a backing file, released when the kernel no longer reads
 * it: a disk-cache object pinned whole (disk_cache_pin_whole) is
 * unpinned by release(arg).  NULL release: nothing to release. */
struct passthrough_lend
{
  void (*release) (void *arg);
  void *arg;
};

/* The kernel's io-mode rule for one inode (see above).  Initialise with
 * passthrough_inode_init; all fields are protected by lock. */
struct passthrough_inode
{
  pthread_mutex_t lock;
  unsigned passthrough_opens;   /* opens answered with passthrough */
  unsigned cached_opens;        /* opens answered with READs, cached */
  uint32_t backing_id;          /* valid while passthrough_opens > 0 */
  struct passthrough_lend lend; /* of backing_id's file, likewise */
};

void passthrough_inode_init (struct passthrough_inode *pi);
void passthrough_inode_destroy (struct passthrough_inode *pi);

/* Decide how one open of pi's inode goes.  backing_fd is a file holding
 * the inode's bytes at the same offsets, or -1 when the caller has none
 * (then the open is passthrough only if the inode already has
 * passthrough opens).  lend (may be NULL) is what keeps backing_fd's
 * bytes in place; the record takes it over whatever the answer: it
 * releases it at once when backing_fd is not used (no passthrough, or
 * the inode's opens already read an earlier registration of the same
 * bytes), else when the last passthrough open of the inode is released,
 * so the bytes stay for as long as the kernel reads them.
 * direct_io: the caller would answer this open with FOPEN_DIRECT_IO if
 * it is not passthrough.
 * Returns true and *backing_id when the open must be answered with
 * passthrough_reply_open, false when it is served with READs.  Never
 * fails: an unusable backing file falls back to READs (logged once). */
bool passthrough_inode_open (struct passthrough_inode *pi, int backing_fd,
                             const struct passthrough_lend *lend,
                             bool direct_io, uint32_t *backing_id);

/* The release of an open decided by passthrough_inode_open, with the
 * same direct_io and its result. */
void passthrough_inode_release (struct passthrough_inode *pi,
                                bool was_passthrough, bool direct_io);

#endif
