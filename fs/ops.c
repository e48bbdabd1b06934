/* diskshelf: the FUSE operations (high-level libfuse3 API).
 *
 * Paths are looked up in the current tree; an open file holds a
 * reference to its entry, so a reload never pulls a stack from under an
 * open file.  Errors from layers are logged with the entry's name and
 * answered with their errno. */
#define FUSE_USE_VERSION 312
#include <fuse.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "daemon.h"
#include "error.h"
#include "mount_watch.h"
#include "retire.h"
#include "perm.h"
#include "prefetch.h"

/* What an open file handle points at. */
struct open_file
{
  struct fs_entry *entry;   /* one reference; NULL for the status file */
  char *status_text;        /* snapshot for the status file */
  size_t status_len;
  char *dir_path;           /* for an open directory */
  bool direct;              /* opened with O_DIRECT: I/O must be aligned */
  struct open_file *prev, *next;   /* protected by open_files_lock */
};

/* Every open file, so that handles the kernel never released (it sends
 * RELEASE asynchronously, and an unmount may beat it) are freed at exit. */
static pthread_mutex_t open_files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct open_file *open_files;

/* Remember a new open file. */
static void
track_open_file (struct open_file *of)
{
  pthread_mutex_lock (&open_files_lock);
  of->prev = NULL;
  of->next = open_files;
  if (open_files)
    open_files->prev = of;
  open_files = of;
  pthread_mutex_unlock (&open_files_lock);
}

/* Free an open file, forgetting it. */
static void
free_open_file (struct open_file *of)
{
  pthread_mutex_lock (&open_files_lock);
  if (of->prev)
    of->prev->next = of->next;
  else
    open_files = of->next;
  if (of->next)
    of->next->prev = of->prev;
  pthread_mutex_unlock (&open_files_lock);
  if (of->entry)
    layer_handle_released (of->entry->stack);
  fs_entry_unref (of->entry);
  free (of->status_text);
  free (of->dir_path);
  free (of);
}

/* Free the handles still open when the loop ended. */
void
fs_release_all (void)
{
  while (open_files)
    free_open_file (open_files);
  retire_forget_all ();
}

static char *status_text (struct daemon *d, size_t *len);

/* The daemon state given to fuse_new. */
static struct daemon *
this_daemon (void)
{
  return fuse_get_context ()->private_data;
}

/* The current tree, with a reference the caller drops. */
static struct fs_tree *
current_tree (struct daemon *d)
{
  struct fs_tree *t;

  pthread_rwlock_rdlock (&d->tree_lock);
  t = d->tree;
  fs_tree_ref (t);
  pthread_rwlock_unlock (&d->tree_lock);
  return t;
}

/* What a path names: 0 and a referenced *entry for a file, 1 for a
 * directory, -ENOENT for nothing.  A name whose old version is being
 * retired, or a hidden old version, resolves to that old entry (see
 * retire.h); checked under tree_lock so a reload's swap and its list of
 * retiring names are seen together. */
static int
resolve (struct daemon *d, const char *path, struct fs_entry **entry)
{
  struct fs_node *n;
  int kind, r;

  *entry = NULL;
  pthread_rwlock_rdlock (&d->tree_lock);
  kind = retire_lookup (path, entry);
  if (kind != 0)
    {
      pthread_rwlock_unlock (&d->tree_lock);
      return kind == 1 ? 0 : 1;
    }
  n = fs_tree_lookup (d->tree, path);
  r = n == NULL ? -ENOENT : n->entry ? 0 : 1;
  /* A broken entry is left out until a retry opens it. */
  if (r == 0 && !fs_entry_listed (n->entry))
    r = -ENOENT;
  if (r == 0)
    {
      fs_entry_ref (n->entry);
      *entry = n->entry;
    }
  pthread_rwlock_unlock (&d->tree_lock);
  return r;
}

/* Record and log a layer error; returns the negative errno to answer. */
static int
entry_failed (struct fs_entry *e, int r, const char *op)
{
  char *what = NULL;

  if (asprintf (&what, "%s: %s", op, error_message ()) < 0)
    what = NULL;
  fs_entry_record_error (e, what ? what : op);
  free (what);
  error_clear ();
  return r;
}

/* Fill a struct stat for a file entry. */
static void
entry_stat (struct daemon *d, struct fs_entry *e, struct stat *st)
{
  uint64_t size = fs_entry_size (e);

  memset (st, 0, sizeof *st);
  st->st_mode = S_IFREG | (fs_entry_writable (e) ? 0644 : 0444);
  st->st_nlink = 1;
  st->st_size = (off_t) size;
  st->st_blksize = 4096;
  st->st_blocks = (blkcnt_t) ((size + 511) / 512);
  st->st_mtim = e->mtime;
  st->st_ctim = e->mtime;
  st->st_atim = e->mtime;
  fs_entry_ownership (d, e, st);
}

/* getattr: files from entries, directories from the tree.  An open file
 * answers from its own entry, whatever its name now means. */
static int
ds_getattr (const char *path, struct stat *st, struct fuse_file_info *fi)
{
  struct daemon *d = this_daemon ();
  struct open_file *of = fi ? (struct open_file *) (uintptr_t) fi->fh : NULL;
  struct fs_entry *e;
  int r;

  if (of && of->entry)
    {
      entry_stat (d, of->entry, st);
      return 0;
    }
  if (path == NULL)
    {
      /* Only open files reach here without a path (nullpath_ok). */
      if (of == NULL)
        return -ESTALE;
      path = of->dir_path ? of->dir_path : "/" STATUS_FILE_NAME;
    }
  if (strcmp (path, "/" STATUS_FILE_NAME) == 0)
    {
      size_t len = 0;
      free (status_text (d, &len));
      memset (st, 0, sizeof *st);
      st->st_mode = S_IFREG | 0444;
      st->st_nlink = 1;
      st->st_uid = d->uid;
      st->st_gid = d->gid;
      st->st_size = (off_t) len;
      return 0;
    }
  r = resolve (d, path, &e);
  if (r < 0)
    return r;
  if (r == 0)
    {
      entry_stat (d, e, st);
      fs_entry_unref (e);
      return 0;
    }
  memset (st, 0, sizeof *st);
  st->st_mode = S_IFDIR | 0755;
  st->st_nlink = 2;
  st->st_mtim = d->started;
  st->st_ctim = d->started;
  st->st_atim = d->started;
  st->st_uid = d->uid;
  st->st_gid = d->gid;
  return 0;
}

/* opendir: remember the path, since readdir may get none (nullpath_ok). */
static int
ds_opendir (const char *path, struct fuse_file_info *fi)
{
  struct open_file *of = calloc (1, sizeof *of);

  if (of == NULL || (of->dir_path = strdup (path)) == NULL)
    {
      free (of);
      return -ENOMEM;
    }
  track_open_file (of);
  fi->fh = (uintptr_t) of;
  return 0;
}

/* releasedir: forget the path. */
static int
ds_releasedir (const char *path, struct fuse_file_info *fi)
{
  free_open_file ((struct open_file *) (uintptr_t) fi->fh);
  return 0;
}

/* readdir: the children of a directory node. */
static int
ds_readdir (const char *path, void *buf, fuse_fill_dir_t fill, off_t offset,
            struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
  struct daemon *d = this_daemon ();
  struct fs_tree *t = current_tree (d);
  struct fs_node *n;

  if (path == NULL && fi && fi->fh)
    path = ((struct open_file *) (uintptr_t) fi->fh)->dir_path;
  n = path ? fs_tree_lookup (t, path) : NULL;

  if (n == NULL || n->entry)
    {
      fs_tree_unref (t);
      return n ? -ENOTDIR : -ENOENT;
    }
  fill (buf, ".", NULL, 0, 0);
  fill (buf, "..", NULL, 0, 0);
  for (size_t i = 0; i < n->nchildren; i++)
    if (n->children[i]->entry == NULL
        || fs_entry_listed (n->children[i]->entry))
      fill (buf, n->children[i]->name, NULL, 0, 0);
  fs_tree_unref (t);
  return 0;
}

/* The text of the hidden status file, malloc'd; NULL when out of memory. */
static char *
status_text (struct daemon *d, size_t *len)
{
  char *text = NULL;
  struct fs_tree *t;
  FILE *mem = open_memstream (&text, len);

  if (mem == NULL)
    return NULL;
  t = current_tree (d);
  fprintf (mem, "catalog: %s\nmountpoint: %s\npid: %d\n",
           d->options.catalog, d->options.mountpoint, (int) getpid ());
  /* The settings in force, so an fstab line can be checked. */
  fprintf (mem, "cache-dir: %s\ncache-size: %llu\nmemory-cache-size: %llu\n"
           "read-only: %s\n",
           d->options.cache_dir ? d->options.cache_dir : "none",
           (unsigned long long) d->options.cache_size,
           (unsigned long long) d->options.memory_cache_size,
           d->options.readonly ? "yes" : "no");
  fs_tree_status (t, mem);
  fs_tree_unref (t);
  fclose (mem);
  return text;
}

/* Snapshot the status text for an open of the hidden status file. */
static int
open_status (struct daemon *d, struct fuse_file_info *fi)
{
  struct open_file *of = calloc (1, sizeof *of);

  if (of == NULL)
    return -ENOMEM;
  of->status_text = status_text (d, &of->status_len);
  if (of->status_text == NULL)
    {
      free (of);
      return -ENOMEM;
    }
  track_open_file (of);
  fi->fh = (uintptr_t) of;
  fi->direct_io = 1;
  return 0;
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

/* open: wait for the entry's stack, take a reference on the entry;
 * refuse writes to read-only ones. */
static int
ds_open (const char *path, struct fuse_file_info *fi)
{
  struct daemon *d = this_daemon ();
  struct fs_entry *e;
  struct open_file *of;
  int accmode = fi->flags & O_ACCMODE;
  int r;

  if (strcmp (path, "/" STATUS_FILE_NAME) == 0)
    return accmode == O_RDONLY ? open_status (d, fi) : -EROFS;
  r = resolve (d, path, &e);
  if (r != 0)
    return r < 0 ? r : -EISDIR;
  /* An entry still opening is waited for, at most its timeout; one that
   * is broken gets one fresh attempt.  Either failure is EIO. */
  if ((r = fs_entry_wait_open (e, open_wait_ms (e))) < 0)
    {
      log_error ("%s", error_message ());
      error_clear ();
      fs_entry_unref (e);
      return r;
    }
  if (accmode != O_RDONLY && !e->stack->writable)
    {
      fs_entry_unref (e);
      return -EROFS;
    }
  of = calloc (1, sizeof *of);
  if (of == NULL)
    {
      fs_entry_unref (e);
      return -ENOMEM;
    }
  of->entry = e;   /* the reference resolve took */
  of->direct = (fi->flags & O_DIRECT) != 0;
  /* A remote source that changed fails the open (it logs why). */
  if ((r = layer_revalidate (of->entry->stack)) < 0)
    {
      fs_entry_unref (of->entry);
      free (of);
      return r;
    }
  layer_handle_opened (of->entry->stack);
  track_open_file (of);
  fi->fh = (uintptr_t) of;
  /* Immutable sources let the kernel keep their pages across opens: a
   * new version of the entry gets a new inode (retire.h), so the pages
   * kept are always this version's. */
  fi->keep_cache = of->entry->stack->immutable;
  return 0;
}

/* unlink: only the daemon's own retiring of old versions (retire.h). */
static int
ds_unlink (const char *path)
{
  return retire_unlink (path);
}

/* rename: only libfuse hiding an open old version (retire.h). */
static int
ds_rename (const char *from, const char *to, unsigned int flags)
{
  return flags ? -EROFS : retire_rename (from, to);
}

/* release: drop the entry reference. */
static int
ds_release (const char *path, struct fuse_file_info *fi)
{
  struct open_file *of = (struct open_file *) (uintptr_t) fi->fh;

  if (of)
    free_open_file (of);
  return 0;
}

/* The open file behind fi. */
static struct open_file *
file_of (struct fuse_file_info *fi)
{
  return (struct open_file *) (uintptr_t) fi->fh;
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

/* read: clamp to the size and read through the stack. */
static int
ds_read (const char *path, char *buf, size_t size, off_t offset,
         struct fuse_file_info *fi)
{
  struct open_file *of = file_of (fi);
  struct layer *l;
  int r;

  if (of->entry == NULL)
    {
      if ((size_t) offset >= of->status_len)
        return 0;
      if (size > of->status_len - (size_t) offset)
        size = of->status_len - (size_t) offset;
      memcpy (buf, of->status_text + offset, size);
      return (int) size;
    }
  l = of->entry->stack;
  if (offset < 0 || misaligned (of, size, offset, l->size))
    return -EINVAL;
  if ((uint64_t) offset >= l->size)
    return 0;
  if (size > l->size - (uint64_t) offset)
    size = (size_t) (l->size - (uint64_t) offset);
  r = layer_pread (l, buf, size, (uint64_t) offset);
  if (r < 0)
    return entry_failed (of->entry, r, "read");
  return (int) size;
}

/* read_buf: like read, but when the stack already holds the bytes in a
 * buffer it can give away (a read-ahead slot, layer_take), reply from
 * that buffer instead of copying it into one of ours.  libfuse frees the
 * memory buffer of the answer with free () after replying. */
static int
ds_read_buf (const char *path, struct fuse_bufvec **bufp, size_t size,
             off_t offset, struct fuse_file_info *fi)
{
  struct open_file *of = file_of (fi);
  struct fuse_bufvec *bv = malloc (sizeof *bv);
  void *mem = NULL;
  int r;

  if (bv == NULL)
    return -ENOMEM;
  if (of->entry && offset >= 0
      && !misaligned (of, size, offset, of->entry->stack->size)
      && layer_take (of->entry->stack, size, (uint64_t) offset, &mem) > 0)
    r = (int) size;
  else
    {
      mem = malloc (size ? size : 1);
      if (mem == NULL)
        {
          free (bv);
          return -ENOMEM;
        }
      r = ds_read (path, mem, size, offset, fi);
      if (r < 0)
        {
          free (mem);
          free (bv);
          return r;
        }
    }
  *bv = (struct fuse_bufvec) FUSE_BUFVEC_INIT ((size_t) r);
  bv->buf[0].mem = mem;
  *bufp = bv;
  return 0;
}

/* write: in place only; the image never grows. */
static int
ds_write (const char *path, const char *buf, size_t size, off_t offset,
          struct fuse_file_info *fi)
{
  struct open_file *of = file_of (fi);
  struct layer *l;
  int r;

  if (of->entry == NULL)
    return -EROFS;
  l = of->entry->stack;
  if (offset < 0 || misaligned (of, size, offset, l->size))
    return -EINVAL;
  if ((uint64_t) offset >= l->size || size > l->size - (uint64_t) offset)
    return -ENOSPC;
  r = layer_pwrite (l, buf, size, (uint64_t) offset);
  if (r < 0)
    return r == -EROFS ? r : entry_failed (of->entry, r, "write");
  return (int) size;
}

/* fsync: flush the stack. */
static int
ds_fsync (const char *path, int datasync, struct fuse_file_info *fi)
{
  struct open_file *of = file_of (fi);
  int r;

  if (of->entry == NULL || !of->entry->stack->writable)
    return 0;
  r = layer_flush (of->entry->stack);
  return r < 0 ? entry_failed (of->entry, r, "flush") : 0;
}

/* fallocate: punch hole -> trim, zero range -> zero, allocate -> no-op. */
static int
ds_fallocate (const char *path, int mode, off_t offset, off_t length,
              struct fuse_file_info *fi)
{
  struct open_file *of = file_of (fi);
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
  return r < 0 ? entry_failed (of->entry, r, "fallocate") : 0;
}

/* lseek: SEEK_DATA and SEEK_HOLE from the stack's extents. */
static off_t
ds_lseek (const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
  struct open_file *of = file_of (fi);
  struct layer *l;
  int64_t r;

  if (of->entry == NULL || (whence != SEEK_DATA && whence != SEEK_HOLE))
    return -EINVAL;
  l = of->entry->stack;
  if (off < 0)
    return -ENXIO;
  if ((uint64_t) off >= l->size)
    return -ENXIO;
  r = layer_seek (l, (uint64_t) off, whence == SEEK_DATA);
  if (r < 0 && r != -ENXIO)
    return entry_failed (of->entry, (int) r, "seek");
  return (off_t) r;
}

/* truncate: only to the current size (an image's size is fixed). */
static int
ds_truncate (const char *path, off_t size, struct fuse_file_info *fi)
{
  struct stat st;
  int r = ds_getattr (path, &st, fi);

  if (r < 0)
    return r;
  if (S_ISDIR (st.st_mode))
    return -EISDIR;
  if (!(st.st_mode & 0200))
    return -EROFS;
  return size == st.st_size ? 0 : -EPERM;
}

/* utimens: accepted and ignored, so `touch` and `cp -p` work. */
static int
ds_utimens (const char *path, const struct timespec tv[2],
            struct fuse_file_info *fi)
{
  return 0;
}

/* Add an entry's size (as getattr shows it) to a total. */
static void
add_size (struct fs_entry *e, void *arg)
{
  *(uint64_t *) arg += fs_entry_size (e);
}

/* statfs: the catalog's totals. */
static int
ds_statfs (const char *path, struct statvfs *sv)
{
  struct daemon *d = this_daemon ();
  struct fs_tree *t = current_tree (d);
  uint64_t total = 0;

  fs_tree_for_each_entry (t, add_size, &total);
  memset (sv, 0, sizeof *sv);
  sv->f_bsize = 4096;
  sv->f_frsize = 4096;
  sv->f_blocks = (fsblkcnt_t) ((total + 4095) / 4096);
  sv->f_files = (fsfilcnt_t) t->entry_count;
  sv->f_namemax = 255;
  fs_tree_unref (t);
  return 0;
}

/* ioctl: the prefetch commands on an open entry (fs/prefetch.c). */
static int
ds_ioctl (const char *path, unsigned int cmd, void *arg,
          struct fuse_file_info *fi, unsigned int flags, void *data)
{
  struct open_file *of = file_of (fi);

  if (of == NULL || of->entry == NULL || (flags & FUSE_IOCTL_COMPAT))
    return -ENOTTY;
  return fs_prefetch_ioctl (of->entry, cmd, data);
}

/* The FUSE handle, for notifications sent from other threads; set
 * between init and destroy, protected by serving_lock (held across a
 * notification, so destroy waits for one in progress). */
static pthread_mutex_t serving_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fuse *serving_fuse;

/* Drop the kernel's cached attributes of an entry's name. */
void
fs_entry_attributes_changed (struct fs_entry *e)
{
  char *path;

  if (asprintf (&path, "/%s", e->config->name) < 0)
    return;
  pthread_mutex_lock (&serving_lock);
  /* -ENOENT: the kernel does not know the name yet; nothing cached. */
  if (serving_fuse)
    fuse_invalidate_path (serving_fuse, path);
  pthread_mutex_unlock (&serving_lock);
  free (path);
}

/* init: let the kernel send big requests and keep caches sane. */
static void *
ds_init (struct fuse_conn_info *conn, struct fuse_config *cfg)
{
  cfg->use_ino = 0;
  /* Operations on open files work from fi alone: skip path building. */
  cfg->nullpath_ok = 1;
  cfg->entry_timeout = 1.0;
  cfg->attr_timeout = 1.0;
  cfg->negative_timeout = 0;
  /* Parallel reads from one file reach us in parallel. */
  if (conn->capable & FUSE_CAP_ASYNC_READ)
    conn->want |= FUSE_CAP_ASYNC_READ;
  retire_set_serving (true);
  pthread_mutex_lock (&serving_lock);
  serving_fuse = fuse_get_context ()->fuse;
  pthread_mutex_unlock (&serving_lock);
  {
    struct daemon *d = fuse_get_context ()->private_data;
    if (mount_watch_start (d->options.mountpoint) < 0)
      log_warning ("%s", error_message ());
  }
  return fuse_get_context ()->private_data;
}

/* destroy: the session ends; stop retiring names through it. */
static void
ds_destroy (void *private_data)
{
  retire_set_serving (false);
  pthread_mutex_lock (&serving_lock);
  serving_fuse = NULL;
  pthread_mutex_unlock (&serving_lock);
  mount_watch_stop ();
}

static const struct fuse_operations operations = {
  .init = ds_init,
  .destroy = ds_destroy,
  .getattr = ds_getattr,
  .opendir = ds_opendir,
  .releasedir = ds_releasedir,
  .readdir = ds_readdir,
  .open = ds_open,
  .release = ds_release,
  .unlink = ds_unlink,
  .rename = ds_rename,
  .read = ds_read,
  .read_buf = ds_read_buf,
  .write = ds_write,
  .fsync = ds_fsync,
  .fallocate = ds_fallocate,
  .lseek = ds_lseek,
  .truncate = ds_truncate,
  .utimens = ds_utimens,
  .statfs = ds_statfs,
  .ioctl = ds_ioctl,
};

/* The operations table for fuse_new. */
const struct fuse_operations *
fs_operations (void)
{
  return &operations;
}
