/* diskshelf: reading the index of an xz file from its end.
 *
 * An xz file is one or more streams, each optionally followed by stream
 * padding (a multiple of four zero bytes).  Each stream ends with a
 * 12-byte footer giving the size of the index before it; the index lists
 * every block's sizes and tells the stream's total size, which leads to
 * the stream header and to the end of the previous stream.  So a few
 * small reads at the end of the file describe it all, without reading
 * any compressed data (xz-file-format.txt, sections 2.1.2, 4 and 2.2).
 */
#include "xz-internal.h"

#include <errno.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define XZ_HEADER_SIZE LZMA_STREAM_HEADER_SIZE
/* Stream padding read per step, from the first step's size up. */
#define PADDING_SCAN_FIRST 4096
#define PADDING_SCAN 65536
/* The most stream padding (zero bytes) accepted in a whole file: real
 * files have a few bytes at most; a huge zero object would otherwise be
 * read from its end to its start before being refused. */
#define MAX_PADDING (4u * 1024 * 1024)

/* Read from the lower layer with a message naming what was read. */
static int
read_at (struct layer *lower, const char *src, void *buf, size_t count,
         uint64_t offset, const char *what)
{
  int r = layer_pread (lower, buf, count, offset);

  if (r < 0)
    return error_prefix (-r, "xz: %s: reading %s at %llu", src, what,
                         (unsigned long long) offset);
  return 0;
}

/* The name of a check type, for messages and status. */
const char *
xz_check_name (uint32_t check)
{
  switch (check)
    {
    case LZMA_CHECK_NONE: return "none";
    case LZMA_CHECK_CRC32: return "CRC32";
    case LZMA_CHECK_CRC64: return "CRC64";
    case LZMA_CHECK_SHA256: return "SHA-256";
    default: return "unknown";
    }
}

/* Move *pos back over stream padding (zero bytes in groups of four),
 * adding what it skips to *padding.  Returns 0, or a negative errno when
 * the padding runs into the start or past MAX_PADDING in all. */
static int
skip_padding (struct layer *lower, const char *src, uint64_t *pos,
              uint64_t *padding)
{
  unsigned char *buf = malloc (PADDING_SCAN);
  size_t step = PADDING_SCAN_FIRST;
  int r = 0;

  if (buf == NULL)
    return error_set (ENOMEM, "xz: %s: out of memory", src);
  while (*pos > 0)
    {
      size_t n = *pos < step ? (size_t) *pos : step;
      size_t i;

      if (*padding > MAX_PADDING)
        {
          r = error_set (EINVAL, "xz: %s: more than %u MiB of zero bytes "
                         "before offset %llu: not an xz file, or stream "
                         "padding longer than diskshelf accepts", src,
                         MAX_PADDING >> 20,
                         (unsigned long long) (*pos + *padding));
          break;
        }
      r = read_at (lower, src, buf, n, *pos - n, "stream padding");
      if (r < 0)
        break;
      for (i = n; i >= 4; i -= 4)
        if (buf[i - 1] | buf[i - 2] | buf[i - 3] | buf[i - 4])
          break;
      *padding += n - i;
      *pos -= n - i;
      if (i >= 4)
        break;
      if (step < PADDING_SCAN)
        step *= 4;
    }
  free (buf);
  if (r == 0 && *pos == 0)
    r = error_set (EINVAL, "xz: %s: only zero bytes: not an xz file", src);
  return r;
}

/* The message for an index over XZ_INDEX_MEMORY_MAX. */
static int
index_too_large (const char *src, uint64_t blocks, uint64_t streams)
{
  return error_set (EFBIG, "xz: %s: the index (%llu blocks in %llu "
                    "streams read so far) needs more than the limit of "
                    "%llu MiB of memory; recompress the image with larger "
                    "blocks (xz -T0 --block-size=16MiB) and as one stream",
                    src,
                    (unsigned long long) blocks,
                    (unsigned long long) streams,
                    XZ_INDEX_MEMORY_MAX >> 20);
}

/* Decode one stream that ends at end (its footer's last byte + 1): set
 * *idx (with stream flags set) and *start. */
static int
read_stream (struct layer *lower, const char *src, uint64_t end,
             uint64_t nth_from_end, uint64_t memory_left,
             uint64_t blocks_so_far, lzma_index **idx, uint64_t *start,
             uint64_t *fingerprint)
{
  unsigned char footer[LZMA_STREAM_HEADER_SIZE];
  unsigned char header[LZMA_STREAM_HEADER_SIZE];
  lzma_stream_flags ff, hf;
  unsigned char *ibuf;
  uint64_t memlimit = memory_left, ssize;
  size_t in_pos = 0;
  lzma_ret ret;
  int r;

  *idx = NULL;
  if (end < 2 * XZ_HEADER_SIZE + 8)
    return error_set (EINVAL, "xz: %s: truncated: %llu bytes cannot hold "
                      "a stream", src, (unsigned long long) end);
  r = read_at (lower, src, footer, sizeof footer, end - sizeof footer,
               "stream footer");
  if (r < 0)
    return r;
  ret = lzma_stream_footer_decode (&ff, footer);
  if (ret == LZMA_FORMAT_ERROR)
    return error_set (EINVAL, "xz: %s: truncated: it starts as an xz file "
                      "but has no stream footer %s (offset %llu); the copy "
                      "or download is incomplete", src,
                      nth_from_end == 0 ? "at its end" : "before a stream",
                      (unsigned long long) (end - sizeof footer));
  if (ret != LZMA_OK)
    return error_set (EIO, "xz: %s: corrupt stream footer at offset %llu",
                      src, (unsigned long long) (end - sizeof footer));
  if (ff.backward_size > end - 2 * XZ_HEADER_SIZE)
    return error_set (EINVAL, "xz: %s: truncated: the index needs %llu "
                      "bytes but the stream has only %llu", src,
                      (unsigned long long) ff.backward_size,
                      (unsigned long long) (end - 2 * XZ_HEADER_SIZE));
  /* A decoded index takes more memory than its bytes: an index larger
   * than the memory left cannot fit, and is not read. */
  if (ff.backward_size > memory_left)
    return index_too_large (src, blocks_so_far, nth_from_end + 1);

  ibuf = malloc (ff.backward_size);
  if (ibuf == NULL)
    return error_set (ENOMEM, "xz: %s: out of memory for the index", src);
  r = read_at (lower, src, ibuf, ff.backward_size,
               end - sizeof footer - ff.backward_size, "index");
  if (r < 0)
    {
      free (ibuf);
      return r;
    }
  ret = lzma_index_buffer_decode (idx, &memlimit, NULL, ibuf, &in_pos,
                                  ff.backward_size);
  *fingerprint = lzma_crc64 (ibuf, ff.backward_size, *fingerprint);
  free (ibuf);
  if (ret == LZMA_MEMLIMIT_ERROR)
    return index_too_large (src, blocks_so_far, nth_from_end + 1);
  if (ret != LZMA_OK || in_pos != ff.backward_size)
    {
      if (ret == LZMA_OK)
        lzma_index_end (*idx, NULL);
      *idx = NULL;
      return error_set (EIO, "xz: %s: corrupt index before offset %llu",
                        src, (unsigned long long) (end - sizeof footer));
    }

  ssize = lzma_index_stream_size (*idx);
  if (ssize > end)
    {
      r = error_set (EINVAL, "xz: %s: truncated: a stream of %llu bytes "
                     "ends at offset %llu", src, (unsigned long long) ssize,
                     (unsigned long long) end);
      goto err;
    }
  *start = end - ssize;
  r = read_at (lower, src, header, sizeof header, *start, "stream header");
  if (r < 0)
    goto err;
  ret = lzma_stream_header_decode (&hf, header);
  if (ret != LZMA_OK)
    {
      r = error_set (EINVAL, "xz: %s: truncated or corrupt: no valid stream "
                     "header at offset %llu", src,
                     (unsigned long long) *start);
      goto err;
    }
  if (lzma_stream_flags_compare (&hf, &ff) != LZMA_OK)
    {
      r = error_set (EIO, "xz: %s: stream header and footer at %llu "
                     "disagree", src, (unsigned long long) *start);
      goto err;
    }
  *fingerprint = lzma_crc64 (header, sizeof header, *fingerprint);
  *fingerprint = lzma_crc64 (footer, sizeof footer, *fingerprint);
  if (lzma_index_stream_flags (*idx, &ff) != LZMA_OK)
    {
      r = error_set (EIO, "xz: %s: bad stream flags", src);
      goto err;
    }
  return 0;

 err:
  lzma_index_end (*idx, NULL);
  *idx = NULL;
  return r;
}

/* Copy the non-empty blocks of a combined index into out. */
static int
collect_blocks (const char *src, const lzma_index *combined,
                struct xz_index *out)
{
  lzma_index_iter it;
  lzma_vli count = lzma_index_block_count (combined);
  uint64_t used = lzma_index_memused (combined);
  size_t n = 0;

  /* liblzma's index and the table are both alive while copying. */
  if (used > XZ_INDEX_MEMORY_MAX
      || count > (XZ_INDEX_MEMORY_MAX - used) / sizeof *out->blocks)
    return index_too_large (src, count, lzma_index_stream_count (combined));
  out->blocks = calloc (count ? count : 1, sizeof *out->blocks);
  if (out->blocks == NULL)
    return error_set (ENOMEM, "xz: %s: out of memory", src);
  lzma_index_iter_init (&it, combined);
  while (!lzma_index_iter_next (&it, LZMA_INDEX_ITER_NONEMPTY_BLOCK))
    {
      struct xz_block *b = &out->blocks[n++];
      b->coffset = it.block.compressed_file_offset;
      b->unpadded = it.block.unpadded_size;
      b->uoffset = it.block.uncompressed_file_offset;
      b->usize = it.block.uncompressed_size;
      b->check = it.stream.flags->check;
      b->stream = (uint32_t) it.stream.number;
      if (b->usize > out->max_usize)
        out->max_usize = b->usize;
    }
  out->nblocks = n;
  return 0;
}

/* Free the indexes of streams not combined yet. */
static void
free_streams (lzma_index **streams, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    lzma_index_end (streams[i], NULL);
  free (streams);
}

/* Read every stream's index, last stream first, and combine them.
 * Memory: every stream's decoded index counts against one budget,
 * XZ_INDEX_MEMORY_MAX; they are kept apart while reading and combined
 * first to last at the end, so each lzma_index_cat moves one stream
 * (combining from the end would move every later stream again each
 * time: quadratic in the number of streams). */
int
xz_index_read (struct layer *lower, const char *src, struct xz_index *out)
{
  lzma_index **streams = NULL;   /* last stream first */
  lzma_index *combined;
  size_t nstreams = 0, cap = 0;
  uint64_t pos = lower->size, used = 0, blocks = 0;
  unsigned char magic[6];
  int r;

  memset (out, 0, sizeof *out);
  out->csize = lower->size;
  if (pos < 6)
    return error_set (EINVAL, "xz: %s: %llu bytes: not an xz file", src,
                      (unsigned long long) pos);
  r = read_at (lower, src, magic, sizeof magic, 0, "stream header");
  if (r < 0)
    return r;
  if (memcmp (magic, "\xfd" "7zXZ\0", 6) != 0)
    return error_set (EINVAL, "xz: %s: not an xz file (no xz magic at the "
                      "start)", src);
  if (pos % 4 != 0)
    return error_set (EINVAL, "xz: %s: truncated: its size %llu is not a "
                      "multiple of four", src, (unsigned long long) pos);

  while (pos > 0)
    {
      uint64_t padding = out->padding, start = 0;
      lzma_index *idx;

      r = skip_padding (lower, src, &pos, &out->padding);
      if (r < 0)
        goto err;
      padding = out->padding - padding;
      r = read_stream (lower, src, pos, nstreams, XZ_INDEX_MEMORY_MAX - used,
                       blocks, &idx, &start, &out->fingerprint);
      if (r < 0)
        goto err;
      if (lzma_index_stream_padding (idx, padding) != LZMA_OK)
        {
          lzma_index_end (idx, NULL);
          r = error_set (EINVAL, "xz: %s: bad stream padding", src);
          goto err;
        }
      used += lzma_index_memused (idx);
      blocks += lzma_index_block_count (idx);
      if (nstreams == cap)
        {
          size_t ncap = cap ? cap * 2 : 16;
          lzma_index **grown = realloc (streams, ncap * sizeof *streams);

          if (grown == NULL)
            {
              lzma_index_end (idx, NULL);
              r = error_set (ENOMEM, "xz: %s: out of memory", src);
              goto err;
            }
          streams = grown;
          cap = ncap;
        }
      streams[nstreams++] = idx;
      /* The table of stream pointers counts too. */
      if (used + cap * sizeof *streams > XZ_INDEX_MEMORY_MAX)
        {
          r = index_too_large (src, blocks, nstreams);
          goto err;
        }
      pos = start;
    }

  combined = streams[--nstreams];
  while (nstreams > 0)
    {
      lzma_index *next = streams[nstreams - 1];

      if (lzma_index_cat (combined, next, NULL) != LZMA_OK)
        {
          lzma_index_end (combined, NULL);
          r = error_set (EINVAL, "xz: %s: the streams together are "
                         "too large", src);
          goto err;
        }
      nstreams--;
    }
  free (streams);
  out->nstreams = (unsigned) lzma_index_stream_count (combined);
  out->usize = lzma_index_uncompressed_size (combined);
  out->checks = lzma_index_checks (combined);
  r = collect_blocks (src, combined, out);
  lzma_index_end (combined, NULL);
  if (r < 0)
    xz_index_free (out);
  return r;

 err:
  free_streams (streams, nstreams);
  return r;
}

/* Memory the block table of idx takes (the digests come on top). */
uint64_t
xz_index_memory (const struct xz_index *idx)
{
  return (uint64_t) idx->nblocks * sizeof *idx->blocks;
}

/* Free what xz_index_read allocated. */
void
xz_index_free (struct xz_index *idx)
{
  free (idx->blocks);
  idx->blocks = NULL;
  idx->nblocks = 0;
}

/* Binary search for the block holding a decompressed offset. */
size_t
xz_index_find (const struct xz_index *idx, uint64_t offset)
{
  size_t lo = 0, hi = idx->nblocks;

  while (hi - lo > 1)
    {
      size_t mid = lo + (hi - lo) / 2;
      if (idx->blocks[mid].uoffset <= offset)
        lo = mid;
      else
        hi = mid;
    }
  return lo;
}
