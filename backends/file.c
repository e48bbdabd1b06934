/* diskshelf: the local file transport (`source = /path` or file:///path).
 *
 * Thread model: any number of threads; pread/pwrite on one fd need no
 * lock.  Holes come from SEEK_DATA/SEEK_HOLE, trim and zero from
 * fallocate. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "entry.h"
#include "error.h"
#include "fileio.h"
#include "options.h"
#include "stack.h"

struct file_layer
{
  struct layer layer;
  int fd;
  char *path;
  bool is_block_device;
};

/* Read exactly count bytes, retrying short reads. */
static int
file_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct file_layer *f = (struct file_layer *) l;
  char *p = buf;

  while (count > 0)
    {
      ssize_t n = pread (f->fd, p, count, (off_t) offset);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return error_set (errno, "file: %s: read at %llu: %s", f->path,
                          (unsigned long long) offset, strerror (errno));
      if (n == 0)
        return error_set (EIO, "file: %s: file shrank under us at %llu",
                          f->path, (unsigned long long) offset);
      p += n;
      count -= (size_t) n;
      offset += (uint64_t) n;
    }
  return 0;
}

/* Write exactly count bytes. */
static int
file_pwrite (struct layer *l, const void *buf, size_t count, uint64_t offset)
{
  struct file_layer *f = (struct file_layer *) l;
  int r = fd_pwrite_all (f->fd, buf, count, offset);

  return r < 0 ? error_prefix (-r, "file: %s", f->path) : 0;
}

/* fdatasync the file. */
static int
file_flush (struct layer *l)
{
  struct file_layer *f = (struct file_layer *) l;

  if (fdatasync (f->fd) < 0)
    return error_set (errno, "file: %s: sync: %s", f->path, strerror (errno));
  return 0;
}

/* Punch a hole, keeping the size. */
static int
file_trim (struct layer *l, uint64_t offset, uint64_t length)
{
  struct file_layer *f = (struct file_layer *) l;

  if (fallocate (f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 (off_t) offset, (off_t) length) < 0)
    return error_set (errno, "file: %s: punch hole: %s", f->path,
                      strerror (errno));
  return 0;
}

/* Zero a range: zero-range, or punch-hole (which reads as zeroes), or
 * fall back to writing zeroes when the file system can do neither. */
static int
file_zero (struct layer *l, uint64_t offset, uint64_t length)
{
  struct file_layer *f = (struct file_layer *) l;
  int r = fd_zero_range (f->fd, offset, length, 1);

  return r < 0 ? error_prefix (-r, "file: %s", f->path) : 0;
}

/* The run at offset, from SEEK_DATA / SEEK_HOLE. */
static int
file_extent (struct layer *l, uint64_t offset, struct layer_extent *out)
{
  struct file_layer *f = (struct file_layer *) l;
  off_t data, hole;

  if (f->is_block_device)
    goto all_data;
  data = lseek (f->fd, (off_t) offset, SEEK_DATA);
  if (data < 0 && errno == ENXIO)
    {
      /* Only a hole from here to the end. */
      out->length = l->size - offset;
      out->hole = out->zero = true;
      return 0;
    }
  if (data < 0)
    goto all_data;
  if ((uint64_t) data > offset)
    {
      out->length = (uint64_t) data - offset;
      out->hole = out->zero = true;
      return 0;
    }
  hole = lseek (f->fd, (off_t) offset, SEEK_HOLE);
  if (hole < 0 || (uint64_t) hole <= offset)
    goto all_data;
  out->length = (uint64_t) hole - offset;
  out->hole = out->zero = false;
  return 0;

 all_data:
  out->length = l->size - offset;
  out->hole = out->zero = false;
  return 0;
}

/* The file's path, inode and mtime: a replaced or edited file differs. */
static void
file_identity (struct layer *l, FILE *out)
{
  struct file_layer *f = (struct file_layer *) l;
  struct stat st;

  fprintf (out, "path: %s\n", f->path);
  if (fstat (f->fd, &st) == 0 && !f->is_block_device)
    fprintf (out, "inode: %llu:%llu\nmtime: %lld.%09ld\n",
             (unsigned long long) st.st_dev, (unsigned long long) st.st_ino,
             (long long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* Close the fd and free the layer. */
static void
file_close (struct layer *l)
{
  struct file_layer *f = (struct file_layer *) l;

  close (f->fd);
  free (f->path);
  free (f);
}

/* A read-only regular file lends itself (a block device does not: the
 * kernel reads only regular files as backing files).  Checked against
 * the size: a file that changed size since open is not lent. */
static int
file_lend_file (struct layer *l, struct layer_lend *out)
{
  struct file_layer *f = (struct file_layer *) l;
  struct stat st;

  if (f->is_block_device || l->writable || fstat (f->fd, &st) < 0
      || !S_ISREG (st.st_mode) || (uint64_t) st.st_size != l->size)
    return 0;
  out->fd = f->fd;
  return 1;
}

static const struct layer_ops file_ops = {
  .name = "file",
  .pread = file_pread,
  .pwrite = file_pwrite,
  .flush = file_flush,
  .trim = file_trim,
  .zero = file_zero,
  .extent = file_extent,
  .identity = file_identity,
  .lend_file = file_lend_file,
  .close = file_close,
};

/* Open a local file or block device as a transport. */
int
layer_file_open (const struct stack_context *ctx, const char *path,
                 struct layer **out)
{
  bool want_ro = ctx->entry->readonly == FLAG_YES || ctx->options->readonly;
  struct file_layer *f;
  struct stat st;
  int fd = -1;

  if (!want_ro)
    fd = open (path, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    {
      fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        return error_set (errno, "file: %s: %s", path, strerror (errno));
      want_ro = true;
    }
  if (fstat (fd, &st) < 0)
    {
      int saved = errno;
      close (fd);
      return error_set (saved, "file: %s: %s", path, strerror (saved));
    }
  f = calloc (1, sizeof *f);
  if (f == NULL || (f->path = strdup (path)) == NULL)
    {
      free (f);
      close (fd);
      return error_set (ENOMEM, "file: %s: out of memory", path);
    }
  f->fd = fd;
  f->layer.ops = &file_ops;
  f->layer.writable = !want_ro;
  if (S_ISBLK (st.st_mode))
    {
      uint64_t bytes;
      f->is_block_device = true;
      if (ioctl (fd, BLKGETSIZE64, &bytes) < 0)
        {
          file_close (&f->layer);
          return error_set (errno, "file: %s: cannot get device size", path);
        }
      f->layer.size = bytes;
    }
  else if (S_ISREG (st.st_mode))
    f->layer.size = (uint64_t) st.st_size;
  else
    {
      file_close (&f->layer);
      return error_set (EINVAL, "file: %s: not a regular file or block"
                        " device", path);
    }
  /* A read-only local file may still change underneath; only say it is
   * immutable when nothing can write through us and it is read-only on
   * disk too. */
  f->layer.immutable = false;
  *out = &f->layer;
  return 0;
}
