/* diskshelf: the one interface every layer implements.
 *
 * An entry in the mount is a stack of layers.  The bottom one is a
 * transport (file, http, nbd, torrent); above it may sit a decoder (xz)
 * and a container (tar member).  Every layer has the same callbacks, so
 * any layer stacks on any other.
 *
 * A layer embeds `struct layer` as its first member and fills in `ops`,
 * `size`, `writable` and `lower` when it is opened.  The size is fixed for
 * the life of the open layer (a source that changes size underneath is an
 * error, reported by pread).
 *
 * Thread model: every callback may be called from many FUSE threads at
 * once; a layer protects its own state.  close is called exactly once,
 * after every other call has returned.
 *
 * Errors: every callback returns 0 (or a count, where said) on success
 * and a negative errno on failure, with a message recorded by error_set
 * (common/error.h) that starts with the layer's name and the entry's
 * source, e.g. "xz: disk.img.xz: block 12: checksum mismatch".
 *
 * Ownership: a layer owns its lower layer and closes it in its own close
 * (layer_close does that for layers that leave close NULL).
 */
#ifndef DISKSHELF_LAYER_H
#define DISKSHELF_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct layer;

/* A file lent by a layer whose bytes are exactly that file's bytes at
 * the same offsets (layer_lend_file).  fd is the layer's: valid while
 * the layer is open; the borrower neither closes nor writes it.  The
 * bytes stay in place until release (arg) is called (NULL release:
 * nothing to give back, e.g. a local file). */
struct layer_lend
{
  int fd;
  void (*release) (void *arg);
  void *arg;
};

/* Bytes lent in place by a layer (layer_borrow): count bytes at data,
 * read-only, valid until release (arg) is called, which must be exactly
 * once, from any thread. */
struct layer_borrow
{
  const void *data;
  void (*release) (void *arg);
  void *arg;
};

/* One run of bytes with the same allocation state, as extents returns. */
struct layer_extent
{
  uint64_t length;   /* > 0 */
  bool hole;         /* not allocated; reads as zeroes when zero is set */
  bool zero;         /* reads as zeroes */
};

struct layer_ops
{
  /* Short name used in messages and status: "file", "http", "xz", ... */
  const char *name;

  /* Required.  Fill buf with count bytes from offset.  The caller
   * guarantees offset + count <= size.  Either every byte is read and 0
   * is returned, or a negative errno is returned; never a short read. */
  int (*pread) (struct layer *l, void *buf, size_t count, uint64_t offset);

  /* Optional (NULL means read-only: the caller gives EROFS).  Same
   * contract as pread. */
  int (*pwrite) (struct layer *l, const void *buf, size_t count,
                 uint64_t offset);

  /* Optional (NULL means nothing to flush: success). */
  int (*flush) (struct layer *l);

  /* Optional: discard a range; afterwards it reads as zeroes.  NULL
   * means not supported: the caller gives EOPNOTSUPP. */
  int (*trim) (struct layer *l, uint64_t offset, uint64_t length);

  /* Optional: make a range read as zeroes.  NULL: the caller writes
   * zero buffers through pwrite. */
  int (*zero) (struct layer *l, uint64_t offset, uint64_t length);

  /* Optional: describe the run of bytes that starts at offset (offset <
   * size).  The run may be longer or shorter than asked; it must not be
   * empty.  NULL means the whole layer is data. */
  int (*extent) (struct layer *l, uint64_t offset, struct layer_extent *out);

  /* Optional: when the layer holds exactly the bytes of [offset,
   * offset+count) in one buffer from malloc () that it can give away (a
   * read-ahead slot its reader has reached), hand that buffer over: set
   * *out (the caller then owns it and frees it with free ()) and return
   * 1.  Return 0 when it has no such buffer (the caller reads with
   * pread).  Saves copying the bytes into the caller's buffer.  NULL:
   * always 0. */
  int (*take) (struct layer *l, size_t count, uint64_t offset, void **out);
  /* Optional: when the layer holds the bytes of [offset, offset+count)
   * contiguous in memory it keeps (a decoded block in the block cache,
   * zeroes), lend them in place: fill *out and return 1; the bytes stay
   * until out->release.  0 when it cannot (the caller reads with pread).
   * Saves the copy into the caller's buffer without giving memory
   * away as take does.  NULL: always 0. */
  int (*borrow) (struct layer *l, size_t count, uint64_t offset,
                 struct layer_borrow *out);
  /* Optional: when the layer's bytes are, right now, exactly the bytes
   * of a file at the same offsets (no transform, nothing missing), lend
   * that file: fill *out and return 1; the bytes stay until
   * out->release.  0 when it has no such file (yet).  A transport
   * answers with its own file or a complete disk-cache copy; a
   * transform only when it keeps its whole output in one such file (a
   * single-block xz decoded completely into the disk cache).  NULL:
   * always 0. */
  int (*lend_file) (struct layer *l, struct layer_lend *out);

  /* Optional: a hint that [offset, offset+length) will be read soon. */
  int (*prefetch) (struct layer *l, uint64_t offset, uint64_t length);

  /* Optional: called when a file of the entry is opened, so that a
   * layer over a remote object can check that it did not change (rate
   * limited as it sees fit).  0 when it did not (or cannot tell); a
   * negative errno fails the open.  NULL: nothing to check. */
  int (*revalidate) (struct layer *l);

  /* Optional: write "key: value" lines about this layer's state (cache
   * fill, progress, peers, last error) for `diskshelf status`.  Secrets
   * never appear. */
  void (*status) (struct layer *l, FILE *out);

  /* Optional: write what identifies this layer's content beyond its
   * name and size (validators such as an ETag, a file's inode and
   * mtime), one "key: value" line each, so a persistent overlay can
   * tell that the bytes below it changed.  Secrets never appear. */
  void (*identity) (struct layer *l, FILE *out);

  /* Optional: a file handle on the entry was opened / released (called
   * on every layer of the stack, top first).  The overlay drops a
   * discard store when the last handle goes. */
  void (*handle_opened) (struct layer *l);
  void (*handle_released) (struct layer *l);

  /* Optional: free everything the layer owns, including l itself and the
   * lower layer.  NULL means: layer_close closes lower and frees l. */
  void (*close) (struct layer *l);
};

struct layer
{
  const struct layer_ops *ops;
  struct layer *lower;   /* owned; NULL for a transport */
  uint64_t size;         /* bytes; fixed while open */
  bool writable;         /* pwrite allowed */
  bool immutable;        /* content never changes: the kernel may cache */
  bool keep_open;        /* works with no reader (a torrent that seeds or
                            downloads in full): the daemon keeps the stack
                            open instead of closing it when idle */
};

/* True when l or a layer below it asks to be kept open. */
bool layer_keep_open (const struct layer *l);

/* Read count bytes at offset, checking the range against the size.
 * Returns 0 or a negative errno with a recorded message. */
int layer_pread (struct layer *l, void *buf, size_t count, uint64_t offset);

/* The bytes of [offset, offset+count) in a buffer the layer gives away:
 * 1 and *out (the caller frees it with free ()), or 0 when the layer has
 * none (read with layer_pread then).  Never fails otherwise. */
int layer_take (struct layer *l, size_t count, uint64_t offset, void **out);

/* The bytes of [offset, offset+count) lent in place (see borrow): 1 and
 * *out (call out->release once done with out->data), or 0 when the
 * layer cannot (read with layer_pread then), or a negative errno with a
 * recorded message when reading them failed. */
int layer_borrow (struct layer *l, size_t count, uint64_t offset,
                  struct layer_borrow *out);

/* Lend the file holding the stack's bytes (see lend_file): 1 and *out,
 * or 0 when the stack is writable or its top layer has no such file.
 * The kernel may then read that file itself instead of asking us. */
int layer_lend_file (struct layer *l, struct layer_lend *out);

/* Write through, refusing with EROFS when the layer is not writable. */
int layer_pwrite (struct layer *l, const void *buf, size_t count,
                  uint64_t offset);

/* Flush, trim, zero: with the defaults documented in layer_ops. */
int layer_flush (struct layer *l);
int layer_trim (struct layer *l, uint64_t offset, uint64_t length);
int layer_zero (struct layer *l, uint64_t offset, uint64_t length);

/* The run starting at offset (the default is one data run to the end). */
int layer_extent (struct layer *l, uint64_t offset, struct layer_extent *out);

/* Find the next offset >= offset that is data (want_data) or a hole.
 * Returns the offset, or size when there is none (for holes: the
 * virtual hole at the end), or a negative errno. */
int64_t layer_seek (struct layer *l, uint64_t offset, bool want_data);

/* At an open of the entry's file: ask every layer of the stack that can
 * whether its source changed.  0, or the first negative errno. */
int layer_revalidate (struct layer *l);

/* Hint a future read; errors are ignored by callers. */
void layer_prefetch (struct layer *l, uint64_t offset, uint64_t length);

/* Write the status lines of this layer and all below it. */
void layer_status (struct layer *l, FILE *out);

/* Write the identity of the stack from l down: "name size" per layer
 * and each layer's identity lines. */
void layer_identity (struct layer *l, FILE *out);

/* Tell every layer of the stack that a file handle was opened or
 * released. */
void layer_handle_opened (struct layer *l);
void layer_handle_released (struct layer *l);

/* Close the whole stack from l down.  NULL is allowed. */
void layer_close (struct layer *l);

/* Process-wide abort: the daemon is going away (its mount was lazily
 * unmounted, or unmounted while reads were blocked), so no layer should
 * keep a reader waiting for a silent peer.  layer_abort_waits sets the
 * flag once and for all and runs the hooks registered with
 * layer_on_abort (e.g. the NBD client's nbd_abort_waits); code that
 * already waits in steps with timeouts (retry back-off) checks
 * layer_waits_aborted and fails with EIO.  Safe from any thread. */
void layer_abort_waits (void);
bool layer_waits_aborted (void);
void layer_on_abort (void (*hook) (void));

/* The names of the stack from top to bottom, "tar < xz < http", written
 * into buf (always NUL-terminated). */
void layer_describe (struct layer *l, char *buf, size_t size);

#endif
