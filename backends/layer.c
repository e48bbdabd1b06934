/* diskshelf: the generic half of the layer interface (range checks,
 * defaults for optional callbacks, seeking over extents). */
#include "layer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Check that [offset, offset+count) lies inside the layer. */
static int
check_range (struct layer *l, size_t count, uint64_t offset)
{
  if (offset > l->size || count > l->size - offset)
    return error_set (EINVAL, "%s: range %llu+%zu is past the end (%llu)",
                      l->ops->name, (unsigned long long) offset, count,
                      (unsigned long long) l->size);
  return 0;
}

/* Read with a range check. */
bool
layer_keep_open (const struct layer *l)
{
  for (; l != NULL; l = l->lower)
    if (l->keep_open)
      return true;
  return false;
}

int
layer_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  int r = check_range (l, count, offset);

  if (r < 0 || count == 0)
    return r;
  return l->ops->pread (l, buf, count, offset);
}

/* A buffer the layer gives away, or 0 (see layer.h). */
int
layer_take (struct layer *l, size_t count, uint64_t offset, void **out)
{
  *out = NULL;
  if (l->ops->take == NULL || count == 0 || offset > l->size
      || count > l->size - offset)
    return 0;
  return l->ops->take (l, count, offset, out) > 0 && *out ? 1 : 0;
}

/* Bytes in place, or 0 (see layer.h). */
int
layer_borrow (struct layer *l, size_t count, uint64_t offset,
              struct layer_borrow *out)
{
  int r;

  out->data = NULL;
  out->release = NULL;
  out->arg = NULL;
  if (l->ops->borrow == NULL || count == 0 || offset > l->size
      || count > l->size - offset)
    return 0;
  r = l->ops->borrow (l, count, offset, out);
  if (r > 0 && out->data == NULL)
    {
      if (out->release)
        out->release (out->arg);
      return 0;
    }
  return r < 0 ? r : r > 0;
}

/* The file holding the stack's bytes, or 0 (see layer.h).  A writable
 * stack never lends: its bytes change under the borrower. */
int
layer_lend_file (struct layer *l, struct layer_lend *out)
{
  out->fd = -1;
  out->release = NULL;
  out->arg = NULL;
  if (l == NULL || l->writable || l->ops->lend_file == NULL)
    return 0;
  if (l->ops->lend_file (l, out) <= 0 || out->fd < 0)
    {
      out->fd = -1;
      return 0;
    }
  return 1;
}

/* Write with a range check, refusing read-only layers. */
int
layer_pwrite (struct layer *l, const void *buf, size_t count,
              uint64_t offset)
{
  int r;

  if (!l->writable || l->ops->pwrite == NULL)
    return error_set (EROFS, "%s: read-only", l->ops->name);
  r = check_range (l, count, offset);
  if (r < 0 || count == 0)
    return r;
  return l->ops->pwrite (l, buf, count, offset);
}

/* Flush; a layer with nothing to flush succeeds. */
int
layer_flush (struct layer *l)
{
  return l->ops->flush ? l->ops->flush (l) : 0;
}

/* Discard a range, where the layer can. */
int
layer_trim (struct layer *l, uint64_t offset, uint64_t length)
{
  int r;

  if (!l->writable)
    return error_set (EROFS, "%s: read-only", l->ops->name);
  if (l->ops->trim == NULL)
    return error_set (EOPNOTSUPP, "%s: cannot discard", l->ops->name);
  r = check_range (l, length, offset);
  if (r < 0 || length == 0)
    return r;
  return l->ops->trim (l, offset, length);
}

/* Zero a range, by the layer's own means or by writing zero buffers. */
int
layer_zero (struct layer *l, uint64_t offset, uint64_t length)
{
  static const size_t step = 1024 * 1024;
  char *zeroes;
  int r;

  if (!l->writable)
    return error_set (EROFS, "%s: read-only", l->ops->name);
  r = check_range (l, length, offset);
  if (r < 0 || length == 0)
    return r;
  if (l->ops->zero)
    return l->ops->zero (l, offset, length);
  if (l->ops->pwrite == NULL)
    return error_set (EOPNOTSUPP, "%s: cannot write zeroes", l->ops->name);
  zeroes = calloc (1, step);
  if (zeroes == NULL)
    return error_set (ENOMEM, "%s: out of memory", l->ops->name);
  while (length > 0 && r == 0)
    {
      size_t n = length < step ? length : step;
      r = l->ops->pwrite (l, zeroes, n, offset);
      offset += n;
      length -= n;
    }
  free (zeroes);
  return r;
}

/* The run starting at offset; one data run when the layer cannot tell. */
int
layer_extent (struct layer *l, uint64_t offset, struct layer_extent *out)
{
  int r;

  if (offset >= l->size)
    return error_set (ENXIO, "%s: offset %llu is past the end",
                      l->ops->name, (unsigned long long) offset);
  if (l->ops->extent == NULL)
    {
      out->length = l->size - offset;
      out->hole = out->zero = false;
      return 0;
    }
  r = l->ops->extent (l, offset, out);
  if (r == 0 && out->length == 0)
    return error_set (EIO, "%s: empty extent at %llu", l->ops->name,
                      (unsigned long long) offset);
  return r;
}

/* Walk extents from offset to the next data or hole. */
int64_t
layer_seek (struct layer *l, uint64_t offset, bool want_data)
{
  while (offset < l->size)
    {
      struct layer_extent e;
      int r = layer_extent (l, offset, &e);
      bool is_data;

      if (r < 0)
        return r;
      /* A run counts as a hole for SEEK_HOLE when it reads as zeroes;
       * an unallocated run of undefined content is data. */
      is_data = !e.zero;
      if (is_data == want_data)
        return offset;
      if (e.length > l->size - offset)
        e.length = l->size - offset;
      offset += e.length;
    }
  return want_data ? -ENXIO : (int64_t) l->size;
}

/* Pass a read-ahead hint down, ignoring failure. */
void
layer_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  if (l->ops->prefetch)
    {
      if (l->ops->prefetch (l, offset, length) < 0)
        error_clear ();
    }
}

/* Status of the stack, top layer first. */
void
layer_status (struct layer *l, FILE *out)
{
  for (; l; l = l->lower)
    if (l->ops->status)
      l->ops->status (l, out);
}

/* What identifies the bytes of the stack, top layer first. */
void
layer_identity (struct layer *l, FILE *out)
{
  for (; l; l = l->lower)
    {
      fprintf (out, "%s %llu\n", l->ops->name, (unsigned long long) l->size);
      if (l->ops->identity)
        l->ops->identity (l, out);
    }
}

/* A file handle on the stack was opened. */
void
layer_handle_opened (struct layer *l)
{
  for (; l; l = l->lower)
    if (l->ops->handle_opened)
      l->ops->handle_opened (l);
}

/* A file handle on the stack was released. */
void
layer_handle_released (struct layer *l)
{
  for (; l; l = l->lower)
    if (l->ops->handle_released)
      l->ops->handle_released (l);
}

/* Close a layer and everything below it. */
void
layer_close (struct layer *l)
{
  if (l == NULL)
    return;
  if (l->ops->close)
    l->ops->close (l);
  else
    {
      layer_close (l->lower);
      free (l);
    }
}

/* "tar < xz < http" */
void
layer_describe (struct layer *l, char *buf, size_t size)
{
  size_t used = 0;

  if (size == 0)
    return;
  buf[0] = '\0';
  for (; l && used < size; l = l->lower)
    {
      int n = snprintf (buf + used, size - used, "%s%s",
                        used ? " < " : "", l->ops->name);
      if (n < 0)
        break;
      used += (size_t) n;
    }
}

#define ABORT_HOOKS_MAX 8

static bool aborted;                              /* atomic */
static void (*abort_hooks[ABORT_HOOKS_MAX]) (void);  /* atomic slots */

/* Register a hook run by layer_abort_waits (once per distinct hook). */
void
layer_on_abort (void (*hook) (void))
{
  for (size_t i = 0; i < ABORT_HOOKS_MAX; i++)
    {
      void (*expected) (void) = NULL;
      if (__atomic_load_n (&abort_hooks[i], __ATOMIC_ACQUIRE) == hook)
        return;
      if (__atomic_compare_exchange_n (&abort_hooks[i], &expected, hook,
                                       false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE))
        {
          if (__atomic_load_n (&aborted, __ATOMIC_ACQUIRE))
            hook ();
          return;
        }
      if (expected == hook)
        return;
    }
}

/* Stop every layer's waits for peers. */
void
layer_abort_waits (void)
{
  if (__atomic_exchange_n (&aborted, true, __ATOMIC_ACQ_REL))
    return;
  for (size_t i = 0; i < ABORT_HOOKS_MAX; i++)
    {
      void (*hook) (void) = __atomic_load_n (&abort_hooks[i],
                                             __ATOMIC_ACQUIRE);
      if (hook)
        hook ();
    }
}

/* True once layer_abort_waits ran. */
bool
layer_waits_aborted (void)
{
  return __atomic_load_n (&aborted, __ATOMIC_ACQUIRE);
}

/* At an open of the entry's file: ask every layer of the stack that can
 * whether its source changed. */
int
layer_revalidate (struct layer *l)
{
  for (; l; l = l->lower)
    if (l->ops->revalidate)
      {
        int r = l->ops->revalidate (l);
        if (r < 0)
          return r;
      }
  return 0;
}
