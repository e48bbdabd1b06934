/* diskshelf nbd: the public I/O calls.  Each checks the range and what
 * the server allows, splits to the server's maximum payload, aligns to
 * its minimum block size (read-modify-write for unaligned writes), and
 * runs the pieces in parallel. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Largest piece for commands without payload (TRIM, WRITE_ZEROES, ...). */
#define NBD_MAX_EFFECT (1024u * 1024 * 1024)

/* Smallest piece a big read is split into across connections.  Reads
 * of 1 MiB (the most FUSE sends) go out whole: splitting them measured
 * slower on a busy machine, since one thread then reads the pieces one
 * after the other and the server's threads wait on it. */
#define NBD_PARALLEL_PIECE (1024u * 1024)

/* Check [offset, offset+count) lies inside the export. */
static int
check_range (struct nbd_client *c, uint64_t count, uint64_t offset)
{
  if (offset > c->info.size || count > c->info.size - offset)
    return nbd_set_error (EINVAL, "%s: range %llu+%llu is past the end of "
                          "the export (%llu)", c->name,
                          (unsigned long long) offset,
                          (unsigned long long) count,
                          (unsigned long long) c->info.size);
  return 0;
}

/* Split [offset, offset+count) into requests of at most step bytes and
 * run them together. */
static int
run_split (struct nbd_client *c, uint16_t type, uint16_t flags, char *rbuf,
           const char *wbuf, uint64_t count, uint64_t offset, uint32_t step)
{
  struct nbd_req stack_reqs[8];
  struct nbd_req *reqs = stack_reqs;
  size_t n = (size_t) ((count + step - 1) / step), i;
  int r;

  if (n == 0)
    return 0;
  if (n > sizeof stack_reqs / sizeof stack_reqs[0])
    {
      /* Bound the memory: at most 64 pieces at once. */
      if (n > 64)
        {
          uint64_t part = (uint64_t) step * 64;
          while (count > 0)
            {
              uint64_t k = count < part ? count : part;
              r = run_split (c, type, flags, rbuf, wbuf, k, offset, step);
              if (r < 0)
                return r;
              count -= k;
              offset += k;
              if (rbuf)
                rbuf += k;
              if (wbuf)
                wbuf += k;
            }
          return 0;
        }
      reqs = calloc (n, sizeof *reqs);
      if (reqs == NULL)
        return nbd_set_error (ENOMEM, "%s: out of memory", c->name);
    }
  else
    memset (reqs, 0, n * sizeof *reqs);
  for (i = 0; i < n; i++)
    {
      uint64_t k = count < step ? count : step;
      reqs[i].type = type;
      reqs[i].flags = flags;
      reqs[i].offset = offset;
      reqs[i].count = (uint32_t) k;
      reqs[i].rbuf = rbuf;
      reqs[i].wbuf = wbuf;
      count -= k;
      offset += k;
      if (rbuf)
        rbuf += k;
      if (wbuf)
        wbuf += k;
    }
  r = nbd_run (c, reqs, n);
  if (reqs != stack_reqs)
    free (reqs);
  return r;
}

/* Read with the range already aligned to the minimum block size. */
static int
read_aligned (struct nbd_client *c, void *buf, uint64_t count,
              uint64_t offset)
{
  uint64_t step = c->info.max_payload;

  /* With several connections, a big read goes out in parallel pieces
   * (at least 1 MiB each) so the server works on them at once. */
  if (c->nconns > 1 && count >= 2 * NBD_PARALLEL_PIECE)
    {
      uint64_t pieces = count / NBD_PARALLEL_PIECE;
      if (pieces > c->nconns)
        pieces = c->nconns;
      step = (count + pieces - 1) / pieces;
      step += (c->info.min_block - step % c->info.min_block)
              % c->info.min_block;
      if (step > c->info.max_payload)
        step = c->info.max_payload;
    }
  return run_split (c, NBD_CMD_READ, 0, buf, NULL, count, offset,
                    (uint32_t) step);
}

/* Read count bytes at offset. */
int
nbd_pread (struct nbd_client *c, void *buf, size_t count, uint64_t offset)
{
  uint64_t min = c->info.min_block, start, end;
  char *bounce;
  int r = check_range (c, count, offset);

  if (r < 0 || count == 0)
    return r;
  if (offset % min == 0 && count % min == 0)
    return read_aligned (c, buf, count, offset);
  start = offset - offset % min;
  end = offset + count;
  end += (min - end % min) % min;
  bounce = malloc (end - start);
  if (bounce == NULL)
    return nbd_set_error (ENOMEM, "%s: out of memory", c->name);
  r = read_aligned (c, bounce, end - start, start);
  if (r == 0)
    memcpy (buf, bounce + (offset - start), count);
  free (bounce);
  return r;
}

/* Write: aligned writes go straight out; unaligned ones read the edge
 * blocks, patch them and write them back, excluding other writes. */
int
nbd_pwrite (struct nbd_client *c, const void *buf, size_t count,
            uint64_t offset)
{
  uint64_t min = c->info.min_block, start, end;
  char *bounce;
  int r;

  if (nbd_is_read_only (c))
    return nbd_set_error (EROFS, "%s: the export is read-only", c->name);
  r = check_range (c, count, offset);
  if (r < 0 || count == 0)
    return r;
  if (min == 1)
    return run_split (c, NBD_CMD_WRITE, 0, NULL, buf, count, offset,
                      c->info.max_payload);
  if (offset % min == 0 && count % min == 0)
    {
      pthread_rwlock_rdlock (&c->rmw_lock);
      r = run_split (c, NBD_CMD_WRITE, 0, NULL, buf, count, offset,
                     c->info.max_payload);
      pthread_rwlock_unlock (&c->rmw_lock);
      return r;
    }
  start = offset - offset % min;
  end = offset + count;
  end += (min - end % min) % min;
  bounce = malloc (end - start);
  if (bounce == NULL)
    return nbd_set_error (ENOMEM, "%s: out of memory", c->name);
  pthread_rwlock_wrlock (&c->rmw_lock);
  r = read_aligned (c, bounce, min, start);
  if (r == 0 && end - min > start)
    r = read_aligned (c, bounce + (end - min - start), min, end - min);
  if (r == 0)
    {
      memcpy (bounce + (offset - start), buf, count);
      r = run_split (c, NBD_CMD_WRITE, 0, NULL, bounce, end - start, start,
                     c->info.max_payload);
    }
  pthread_rwlock_unlock (&c->rmw_lock);
  free (bounce);
  return r;
}

/* Flush the server's cache (a no-op when it has none to flush). */
int
nbd_flush (struct nbd_client *c)
{
  struct nbd_req req = { .type = NBD_CMD_FLUSH };

  if (!nbd_can_flush (c) || nbd_is_read_only (c))
    return 0;
  return nbd_run (c, &req, 1);
}

/* Run a payload-less command over the aligned inside of a range. */
static int
effect (struct nbd_client *c, uint16_t type, uint64_t offset,
        uint64_t length)
{
  uint64_t min = c->info.min_block;
  uint64_t start = offset + (min - offset % min) % min;
  uint64_t end = offset + length - (offset + length) % min;

  if (end <= start)
    return 0;
  return run_split (c, type, 0, NULL, NULL, end - start, start,
                    NBD_MAX_EFFECT);
}

/* Discard a range (a hint: only whole minimum blocks are discarded). */
int
nbd_trim (struct nbd_client *c, uint64_t offset, uint64_t length)
{
  int r;

  if (nbd_is_read_only (c))
    return nbd_set_error (EROFS, "%s: the export is read-only", c->name);
  if (!nbd_can_trim (c))
    return nbd_set_error (EOPNOTSUPP, "%s: the server cannot trim", c->name);
  r = check_range (c, length, offset);
  if (r < 0 || length == 0)
    return r;
  return effect (c, NBD_CMD_TRIM, offset, length);
}

/* Make a range read as zeroes; unaligned edges are written as zeroes. */
int
nbd_zero (struct nbd_client *c, uint64_t offset, uint64_t length)
{
  uint64_t min = c->info.min_block;
  uint64_t start, end;
  char *zeroes;
  int r;

  if (nbd_is_read_only (c))
    return nbd_set_error (EROFS, "%s: the export is read-only", c->name);
  if (!nbd_can_zero (c))
    return nbd_set_error (EOPNOTSUPP, "%s: the server cannot write zeroes",
                          c->name);
  r = check_range (c, length, offset);
  if (r < 0 || length == 0)
    return r;
  start = offset + (min - offset % min) % min;
  end = offset + length - (offset + length) % min;
  if (end <= start)
    start = end = offset + length;
  if (start > offset || end < offset + length)
    {
      uint64_t head = start - offset, tail = offset + length - end;
      zeroes = calloc (1, head > tail ? head : tail);
      if (zeroes == NULL)
        return nbd_set_error (ENOMEM, "%s: out of memory", c->name);
      if (start > offset)
        r = nbd_pwrite (c, zeroes, (size_t) (start - offset), offset);
      if (r == 0 && end < offset + length)
        r = nbd_pwrite (c, zeroes, (size_t) tail, end);
      free (zeroes);
      if (r < 0)
        return r;
    }
  if (end <= start)
    return 0;
  if (min > 1)
    pthread_rwlock_rdlock (&c->rmw_lock);
  r = run_split (c, NBD_CMD_WRITE_ZEROES, 0, NULL, NULL, end - start, start,
                 NBD_MAX_EFFECT);
  if (min > 1)
    pthread_rwlock_unlock (&c->rmw_lock);
  return r;
}

/* Ask the server to prefetch a range (ignored when it cannot). */
int
nbd_cache (struct nbd_client *c, uint64_t offset, uint64_t length)
{
  int r;

  if (!nbd_can_cache (c))
    return 0;
  r = check_range (c, length, offset);
  if (r < 0 || length == 0)
    return r;
  return effect (c, NBD_CMD_CACHE, offset, length);
}

/* The run of equal allocation state that starts at offset. */
int
nbd_block_status (struct nbd_client *c, uint64_t offset,
                  struct nbd_extent *out)
{
  uint64_t min = c->info.min_block, start, len;
  struct nbd_req req = { .type = NBD_CMD_BLOCK_STATUS };
  int r;

  if (offset >= c->info.size)
    return nbd_set_error (ENXIO, "%s: offset %llu is past the end", c->name,
                          (unsigned long long) offset);
  if (!nbd_can_block_status (c))
    {
      out->length = c->info.size - offset;
      out->flags = 0;
      return 0;
    }
  start = offset - offset % min;
  len = c->info.size - start;
  if (len > NBD_MAX_EFFECT)
    len = NBD_MAX_EFFECT;
  len -= len % min;
  if (len == 0)
    len = c->info.size - start;
  req.offset = start;
  req.count = (uint32_t) len;
  req.extent = out;
  r = nbd_run (c, &req, 1);
  if (r < 0)
    return r;
  if (out->length <= offset - start)
    {
      /* The first extent ended before offset (only possible when offset
       * is unaligned): call the rest of the block data. */
      out->length = min - (offset - start);
      out->flags = 0;
      return 0;
    }
  out->length -= offset - start;
  if (out->length > c->info.size - offset)
    out->length = c->info.size - offset;
  return 0;
}
