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
#define MAX_INDEX_BYTES (256u * 1024 * 1024)   /* larger is hostile */
#define INDEX_MEMLIMIT (512u * 1024 * 1024)
#define PADDING_SCAN 65536

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

/* Move *pos back over stream padding (zero bytes in groups of four).
 * Returns 0, or a negative errno when the padding runs into the start. */
static int
skip_padding (struct layer *lower, const char *src, uint64_t *pos,
              uint64_t *padding)
{
  unsigned char *buf = malloc (PADDING_SCAN);
  int r = 0;

  if (buf == NULL)
    return error_set (ENOMEM, "xz: %s: out of memory", src);
  while (*pos > 0)
    {
      size_t n = *pos < PADDING_SCAN ? (size_t) *pos : PADDING_SCAN;
      size_t i;

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
    }
  free (buf);
  if (r == 0 && *pos == 0)
    r = error_set (EINVAL, "xz: %s: only zero bytes: not an xz file", src);
  return r;
}

/* Decode one stream that ends at end (its footer's last byte + 1): set
 * *idx (with stream flags set) and *start. */
static int
read_stream (struct layer *lower, const char *src, uint64_t end,
             unsigned nth_from_end, lzma_index **idx, uint64_t *start,
             uint64_t *fingerprint)
{
  unsigned char footer[LZMA_STREAM_HEADER_SIZE];
  unsigned char header[LZMA_STREAM_HEADER_SIZE];
  lzma_stream_flags ff, hf;
  unsigned char *ibuf;
  uint64_t memlimit = INDEX_MEMLIMIT, ssize;
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
  if (ff.backward_size > MAX_INDEX_BYTES)
    return error_set (EINVAL, "xz: %s: index of %llu bytes is too large",
                      src, (unsigned long long) ff.backward_size);

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
    return error_set (EINVAL, "xz: %s: the index has too many blocks", src);
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
  size_t n = 0;

  if (count > SIZE_MAX / sizeof *out->blocks)
    return error_set (EINVAL, "xz: %s: too many blocks", src);
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

/* Read every stream's index, last stream first, and combine them. */
int
xz_index_read (struct layer *lower, const char *src, struct xz_index *out)
{
  lzma_index *combined = NULL;
  uint64_t pos = lower->size;
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
      uint64_t padding = 0, start = 0;
      lzma_index *idx;

      r = skip_padding (lower, src, &pos, &padding);
      if (r < 0)
        goto err;
      r = read_stream (lower, src, pos, out->nstreams, &idx, &start,
                       &out->fingerprint);
      if (r < 0)
        goto err;
      if (lzma_index_stream_padding (idx, padding) != LZMA_OK)
        {
          lzma_index_end (idx, NULL);
          r = error_set (EINVAL, "xz: %s: bad stream padding", src);
          goto err;
        }
      out->padding += padding;
      out->nstreams++;
      if (combined)
        {
          if (lzma_index_cat (idx, combined, NULL) != LZMA_OK)
            {
              lzma_index_end (idx, NULL);
              r = error_set (EINVAL, "xz: %s: the streams together are "
                             "too large", src);
              goto err;
            }
        }
      combined = idx;
      pos = start;
    }

  out->usize = lzma_index_uncompressed_size (combined);
  out->checks = lzma_index_checks (combined);
  r = collect_blocks (src, combined, out);
  lzma_index_end (combined, NULL);
  if (r < 0)
    xz_index_free (out);
  return r;

 err:
  if (combined)
    lzma_index_end (combined, NULL);
  return r;
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
