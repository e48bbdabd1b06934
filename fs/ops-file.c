/* diskshelf: the FUSE requests on open files (see ops.h).
 *
 * An open file holds a reference to its entry, so a reload never pulls
 * a stack from under it.  Errors from layers are logged with the entry's
 * name and answered with their errno. */
#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "hooks.h"
#include "nodes.h"
#include "prefetch.h"

/* Every open file, so that handles the kernel never released (it sends
 * RELEASE asynchronously, and an unmount may beat it) are freed at exit. */
static pthread_mutex_t open_files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct open_file *open_files;

void
ops_track_open_file (struct open_file *of)
{
  pthread_mutex_lock (&open_files_lock);
  of->prev = NULL;
  of->next = open_files;
  if (open_files)
    open_files->prev = of;
  open_files = of;
  pthread_mutex_unlock (&open_files_lock);
}

void
ops_free_open_file (struct open_file *of)
{
  pthread_mutex_lock (&open_files_lock);
  if (of->prev)
    of->prev->next = of->next;
  else
    open_files = of->next;
  if (of->next)
    of->next->prev = of->prev;
  pthread_mutex_unlock (&open_files_lock);
  fs_release_backing (of);
  if (of->entry)
    layer_handle_released (of->entry->stack);
  fs_entry_unref (of->entry);
  free (of->status_text);
  free (of->dir_path);
  for (size_t i = 0; i < of->nrows; i++)
    {
      free (of->rows[i].name);
      fs_entry_unref (of->rows[i].entry);
    }
  free (of->rows);
  free (of);
}

/* Free the handles still open when the loop ended, and the inodes. */
void
fs_release_all (void)
{
  while (open_files)
    ops_free_open_file (open_files);
  nodes_free_all ();
}

int
ops_entry_failed (struct fs_entry *e, int r, const char *op)
{
  char *what = NULL;

  if (asprintf (&what, "%s: %s", op, error_message ()) < 0)
    what = NULL;
  fs_entry_record_error (e, what ? what : op);
  free (what);
  error_clear ();
  return r;
}

/* Reply to an open; a reply the kernel did not take (the request was
 * interrupted) gets no release, so the file is freed here. */
static void
reply_open (fuse_req_t req, struct open_file *of, struct fuse_file_info *fi)
{
  if (fuse_reply_open (req, fi) != 0)
    ops_free_open_file (of);
}

/* Snapshot the status text for an open of the hidden status file. */
static void
open_status (fuse_req_t req, struct fuse_file_info *fi)
{
  struct open_file *of;

  if ((fi->flags & O_ACCMODE) != O_RDONLY)
    {
      fuse_reply_err (req, EROFS);
      return;
    }
  of = calloc (1, sizeof *of);
  if (of == NULL
      || (of->status_text = ops_status_text (ops_daemon (req),
                                             &of->status_len)) == NULL)
    {
      free (of);
      fuse_reply_err (req, ENOMEM);
      return;
    }
  ops_track_open_file (of);
  fi->fh = (uintptr_t) of;
  fi->direct_io = 1;
  reply_open (req, of, fi);
}

/* How long an open waits for an entry's stack: the entry's timeout
 * (its `timeout =` key, else the 30 s default) and a little more, so
 * that the open attempt in progress can report its own timeout. */
static unsigned
open_wait_ms (const struct fs_entry *e)
{
  double s = e->config->timeout > 0 ? e->config->timeout : 30;

  return (unsigned) (s * 1000) + 2000;
}

/* Open a file entry: 0 and a tracked open file, or a negative errno. */
static int
open_entry (struct fs_entry *e, struct fuse_file_info *fi,
            struct open_file **out)
{
  struct open_file *of;
  int r;

  /* An entry still opening is waited for, at most its timeout; one that
   * is broken gets one fresh attempt.  Either failure is EIO. */
  if ((r = fs_entry_wait_open (e, open_wait_ms (e))) < 0)
    {
      log_error ("%s", error_message ());
      error_clear ();
      return r;
    }
  if ((fi->flags & O_ACCMODE) != O_RDONLY && !e->stack->writable)
    return -EROFS;
  /* A remote source that changed fails the open (it logs why). */
  if ((r = layer_revalidate (e->stack)) < 0)
    return r;
  of = calloc (1, sizeof *of);
  if (of == NULL)
    return -ENOMEM;
  fs_entry_ref (e);
  of->entry = e;
  of->direct = (fi->flags & O_DIRECT) != 0;
  layer_handle_opened (e->stack);
  ops_track_open_file (of);
  *out = of;
  return 0;
}

/* open: the inode's own entry version, waited for; writes to read-only
 * entries are refused. */
void
ops_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs_entry *e;
  struct open_file *of = NULL;
  int r;

  if (ino == NODES_STATUS_INO)
    {
      open_status (req, fi);
      return;
    }
  e = nodes_file_entry (ino);
  if (e == NULL)
    {
      fuse_reply_err (req, nodes_dir_path (ino) ? EISDIR : ESTALE);
      return;
    }
  r = open_entry (e, fi, &of);
  fs_entry_unref (e);
  if (r < 0)
    {
      fuse_reply_err (req, -r);
      return;
    }
  fi->fh = (uintptr_t) of;
  /* Immutable sources let the kernel keep their pages across opens: a
   * new version of the entry is a new inode (nodes.h), so the pages kept
   * are always this version's. */
  fi->keep_cache = of->entry->stack->immutable;
  /* A read-only open may be answered with a backing file the kernel
   * reads itself (FUSE passthrough); the hook replies when it does. */
  if ((fi->flags & O_ACCMODE) == O_RDONLY
      && fs_open_backing (req, of->entry, fi) > 0)
    return;
  reply_open (req, of, fi);
}

/* release: drop the entry reference. */
void
ops_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);

  if (of)
    ops_free_open_file (of);
  fuse_reply_err (req, 0);
}

/* O_DIRECT I/O must be sector-aligned, as on a disk-backed file system.
 * qemu (cache=none) probes this: if 1-byte direct reads worked it would
 * assume 4 KiB alignment and refuse images whose size is not a multiple
 * of it, such as a 512-byte boot sector. */
#define DIRECT_IO_ALIGN 512

/* Is an O_DIRECT request misaligned?  A request that ends at the end of
 * an image whose size is not a multiple of the sector is fine (the
 * kernel cuts direct reads at the file size). */
static bool
misaligned (const struct open_file *of, size_t size, off_t offset,
            uint64_t file_size)
{
  if (!of->direct)
    return false;
  if ((uint64_t) offset & (DIRECT_IO_ALIGN - 1))
    return true;
  return (size & (DIRECT_IO_ALIGN - 1)) && (uint64_t) offset + size
                                           < file_size;
}

/* read: clamp to the size and read through the stack.  When the stack
 * already holds the bytes in a buffer it can give away (a read-ahead
 * slot, layer_take), the reply is sent from that buffer instead of
 * being copied into one of ours; when it holds them in memory it keeps
 * (a decoded block, zeroes: layer_borrow), from there. */
void
ops_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
          struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);
  struct layer *l;
  void *mem = NULL;
  int r;

  if (of->entry == NULL)
    {
      if (offset < 0 || (size_t) offset >= of->status_len)
        size = 0;
      else if (size > of->status_len - (size_t) offset)
        size = of->status_len - (size_t) offset;
      /* From a copy: once the kernel has the reply the reader may close
       * the file, and a RELEASE on another thread free the text while
       * this writev still returns (ASan checks the iovec after it). */
      mem = size ? malloc (size) : NULL;
      if (size && mem == NULL)
        {
          fuse_reply_err (req, ENOMEM);
          return;
        }
      if (size)
        memcpy (mem, of->status_text + offset, size);
      fuse_reply_buf (req, mem, size);
      free (mem);
      return;
    }
  l = of->entry->stack;
  __atomic_add_fetch (&of->entry->reads, 1, __ATOMIC_RELAXED);
  if (offset < 0 || misaligned (of, size, offset, l->size))
    {
      fuse_reply_err (req, EINVAL);
      return;
    }
  if ((uint64_t) offset >= l->size)
    {
      fuse_reply_buf (req, NULL, 0);
      return;
    }
  if (size > l->size - (uint64_t) offset)
    size = (size_t) (l->size - (uint64_t) offset);
  if (!of->direct)
    fs_count_page_cache_bytes (of->entry, size);
  if (layer_take (l, size, (uint64_t) offset, &mem) <= 0)
    {
      struct layer_borrow lent;

      r = layer_borrow (l, size, (uint64_t) offset, &lent);
      if (r < 0)
        {
          fuse_reply_err (req, -ops_entry_failed (of->entry, r, "read"));
          return;
        }
      if (r > 0)
        {
          /* The bytes stay in place until the kernel has them. */
          fuse_reply_buf (req, lent.data, size);
          if (lent.release)
            lent.release (lent.arg);
          return;
        }
      mem = malloc (size ? size : 1);
      if (mem == NULL)
        {
          fuse_reply_err (req, ENOMEM);
          return;
        }
      r = layer_pread (l, mem, size, (uint64_t) offset);
      if (r < 0)
        {
          free (mem);
          fuse_reply_err (req, -ops_entry_failed (of->entry, r, "read"));
          return;
        }
    }
  fuse_reply_buf (req, mem, size);
  free (mem);
}

/* write: in place only; the image never grows. */
void
ops_write (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
           off_t offset, struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);
  struct layer *l;
  int r;

  if (of->entry == NULL)
    {
      fuse_reply_err (req, EROFS);
      return;
    }
  l = of->entry->stack;
  if (offset < 0 || misaligned (of, size, offset, l->size))
    r = -EINVAL;
  else if ((uint64_t) offset >= l->size
           || size > l->size - (uint64_t) offset)
    r = -ENOSPC;
  else if ((r = layer_pwrite (l, buf, size, (uint64_t) offset)) < 0
           && r != -EROFS)
    r = ops_entry_failed (of->entry, r, "write");
  if (r < 0)
    fuse_reply_err (req, -r);
  else
    fuse_reply_write (req, size);
}

/* fsync: flush the stack. */
void
ops_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
           struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);
  int r = 0;

  if (of->entry && of->entry->stack->writable
      && (r = layer_flush (of->entry->stack)) < 0)
    r = ops_entry_failed (of->entry, r, "flush");
  fuse_reply_err (req, -r);
}

/* What a fallocate does: punch hole -> trim, zero range -> zero,
 * allocate -> nothing.  0 or a negative errno. */
static int
allocate (struct open_file *of, int mode, off_t offset, off_t length)
{
  struct layer *l;
  int r;

  if (of->entry == NULL)
    return -EROFS;
  l = of->entry->stack;
  if (!l->writable)
    return -EROFS;
  if (offset < 0 || length <= 0)
    return -EINVAL;
  if ((uint64_t) offset >= l->size)
    return (mode & FALLOC_FL_KEEP_SIZE) ? 0 : -ENOSPC;
  if ((uint64_t) length > l->size - (uint64_t) offset)
    {
      if (!(mode & FALLOC_FL_KEEP_SIZE))
        return -ENOSPC;
      length = (off_t) (l->size - (uint64_t) offset);
    }
  if (mode & FALLOC_FL_PUNCH_HOLE)
    r = layer_trim (l, (uint64_t) offset, (uint64_t) length);
  else if (mode & FALLOC_FL_ZERO_RANGE)
    r = layer_zero (l, (uint64_t) offset, (uint64_t) length);
  else if ((mode & ~FALLOC_FL_KEEP_SIZE) == 0)
    return 0;   /* the space of a fixed-size image is already there */
  else
    return -EOPNOTSUPP;
  if (r == -EOPNOTSUPP)
    return r;
  return r < 0 ? ops_entry_failed (of->entry, r, "fallocate") : 0;
}

void
ops_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
               off_t length, struct fuse_file_info *fi)
{
  fuse_reply_err (req, -allocate (ops_file (fi), mode, offset, length));
}

/* lseek: SEEK_DATA and SEEK_HOLE from the stack's extents. */
void
ops_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
           struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);
  struct layer *l;
  int64_t r;

  if (of->entry == NULL || (whence != SEEK_DATA && whence != SEEK_HOLE))
    {
      fuse_reply_err (req, EINVAL);
      return;
    }
  l = of->entry->stack;
  if (off < 0 || (uint64_t) off >= l->size)
    {
      fuse_reply_err (req, ENXIO);
      return;
    }
  r = layer_seek (l, (uint64_t) off, whence == SEEK_DATA);
  if (r < 0 && r != -ENXIO)
    r = ops_entry_failed (of->entry, (int) r, "seek");
  if (r < 0)
    fuse_reply_err (req, (int) -r);
  else
    fuse_reply_lseek (req, (off_t) r);
}

/* ioctl: the prefetch commands on an open entry (fs/prefetch.c).  The
 * kernel hands in _IOW data and takes back out_bufsz bytes of _IOR data
 * (restricted ioctls: the sizes come from the command number). */
void
ops_ioctl (fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
           struct fuse_file_info *fi, unsigned flags, const void *in_buf,
           size_t in_bufsz, size_t out_bufsz)
{
  struct open_file *of = ops_file (fi);
  void *data = NULL;
  int r;

  if (of == NULL || of->entry == NULL || (flags & FUSE_IOCTL_COMPAT)
      || (flags & FUSE_IOCTL_DIR))
    {
      fuse_reply_err (req, ENOTTY);
      return;
    }
  if (out_bufsz)
    {
      data = calloc (1, out_bufsz > in_bufsz ? out_bufsz : in_bufsz);
      if (data == NULL)
        {
          fuse_reply_err (req, ENOMEM);
          return;
        }
      if (in_bufsz)
        memcpy (data, in_buf, in_bufsz);
    }
  r = fs_prefetch_ioctl (of->entry, cmd, data ? data : (void *) in_buf);
  if (r < 0)
    fuse_reply_err (req, -r);
  else
    fuse_reply_ioctl (req, r, data, out_bufsz);
  free (data);
}
