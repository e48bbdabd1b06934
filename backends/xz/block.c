/* diskshelf: decoding one xz block into memory.
 *
 * The index gives the block's position, its unpadded size, its
 * decompressed size and the check type of its stream; the block header
 * (xz-file-format.txt 3.1) gives the filter chain.  liblzma's block
 * decoder then verifies the compressed size, the decompressed size and
 * the check (CRC32, CRC64 or SHA-256) as it goes: a block is good only
 * when lzma_code returns LZMA_STREAM_END.
 *
 * A block of a VM image is often all zeroes.  While everything decoded
 * so far is zero, output goes to a small per-thread scratch piece, still
 * hot in the CPU cache when it is checked, instead of the block's
 * buffer: a zero block then touches none of its buffer's pages and is
 * reported as XZ_BLOCK_ZERO.  At the first non-zero byte the zero prefix
 * is written out and decoding goes on straight into the buffer.  A small
 * zero block is remembered by its bytes on disk (zerosig.c), and the
 * blocks with the same bytes are then zeroes without decoding.
 *
 * Thread model: any number of threads at once.  Each thread keeps one
 * lzma_stream, one input buffer and one scratch piece, reused from block
 * to block (liblzma keeps the dictionary when the next block has the
 * same size), freed when the thread exits.
 */
#include "xz-internal.h"

#include <errno.h>
#include <lzma.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Compressed input is read in pieces of this size, so decoding starts
 * as soon as the first piece is in while the rest is fetched (the whole
 * block is hinted to the transport first). */
#define INPUT_CHUNK (1024u * 1024)

/* Output is checked for zeroes in pieces of this size, small enough to
 * stay in the CPU's L2 cache between the decoder writing it and the
 * check reading it. */
#define ZERO_PIECE (256u * 1024)

struct decoder
{
  lzma_stream strm;
  unsigned char *in;            /* INPUT_CHUNK bytes */
  unsigned char *scratch;       /* ZERO_PIECE bytes */
};

static pthread_key_t decoder_key;
static pthread_once_t decoder_once = PTHREAD_ONCE_INIT;

/* Free one thread's decoder. */
static void
decoder_free (void *p)
{
  struct decoder *d = p;

  lzma_end (&d->strm);
  free (d->in);
  free (d->scratch);
  free (d);
}

/* Create the thread-local key once. */
static void
decoder_key_init (void)
{
  pthread_key_create (&decoder_key, decoder_free);
}

/* This thread's decoder, created on first use. */
static struct decoder *
decoder_get (void)
{
  struct decoder *d;

  pthread_once (&decoder_once, decoder_key_init);
  d = pthread_getspecific (decoder_key);
  if (d)
    return d;
  d = calloc (1, sizeof *d);
  if (d == NULL)
    return NULL;
  d->in = malloc (INPUT_CHUNK);
  d->scratch = malloc (ZERO_PIECE);
  if (d->in == NULL || d->scratch == NULL)
    {
      free (d->in);
      free (d->scratch);
      free (d);
      return NULL;
    }
  d->strm = (lzma_stream) LZMA_STREAM_INIT;
  pthread_setspecific (decoder_key, d);
  return d;
}

/* Free this thread's decoder now. */
void
xz_block_thread_cleanup (void)
{
  struct decoder *d;

  pthread_once (&decoder_once, decoder_key_init);
  d = pthread_getspecific (decoder_key);
  if (d)
    {
      pthread_setspecific (decoder_key, NULL);
      decoder_free (d);
    }
}

/* Free the options the block header decoder allocated. */
static void
free_filters (lzma_filter *filters)
{
  size_t i;

  for (i = 0; i < LZMA_FILTERS_MAX && filters[i].id != LZMA_VLI_UNKNOWN; i++)
    {
      free (filters[i].options);
      filters[i].options = NULL;
    }
}

/* Turn a liblzma error into a negative errno and a message. */
static int
decode_error (lzma_ret ret, const char *src, const struct xz_block *b,
              size_t n)
{
  const char *what;
  int err = EIO;

  switch (ret)
    {
    case LZMA_DATA_ERROR:
      what = "corrupt data or check mismatch";
      break;
    case LZMA_BUF_ERROR:
      what = "compressed data ends too early (truncated or corrupt)";
      break;
    case LZMA_MEM_ERROR:
      what = "out of memory";
      err = ENOMEM;
      break;
    case LZMA_MEMLIMIT_ERROR:
      what = "the decoder would need too much memory";
      break;
    case LZMA_OPTIONS_ERROR:
      what = "unsupported filter or options";
      break;
    case LZMA_UNSUPPORTED_CHECK:
      what = "unsupported check type";
      break;
    default:
      what = "decoder error";
      break;
    }
  return error_set (err, "xz: %s: block %zu (image bytes %llu-%llu, %s "
                    "check): %s (liblzma code %d)", src, n,
                    (unsigned long long) b->uoffset,
                    (unsigned long long) (b->uoffset + b->usize - 1),
                    xz_check_name (b->check), what, (int) ret);
}

/* The message for a block whose decoder would need more than
 * XZ_DECODER_MEMLIMIT (need is UINT64_MAX when unknown). */
int
xz_memlimit_error (const char *src, uint64_t need, const struct xz_block *b,
                   size_t n)
{
  char needs[64] = "more";

  if (need != UINT64_MAX)
    snprintf (needs, sizeof needs, "%llu MiB",
              (unsigned long long) ((need + (1 << 20) - 1) >> 20));
  return error_set (EIO, "xz: %s: block %zu (image bytes %llu-%llu): its "
                    "decoder needs %s of memory (the dictionary its header "
                    "declares), more than the limit of %llu MiB; "
                    "recompress the image with a smaller dictionary "
                    "(xz -6, or --lzma2=dict=64MiB)", src, n,
                    (unsigned long long) b->uoffset,
                    (unsigned long long) (b->uoffset + b->usize - 1),
                    needs, XZ_DECODER_MEMLIMIT >> 20);
}

/* Read the first piece of block b's compressed data into in (the whole
 * block when it is at most INPUT_CHUNK bytes, padded), hinting the rest
 * to the transport.  Sets *got to its length and *cpos to the file
 * offset after it. */
static int
block_read_first (struct layer *lower, const char *src,
                  const struct xz_block *b, size_t n, unsigned char *in,
                  size_t *got, uint64_t *cpos)
{
  uint64_t total = (b->unpadded + 3) & ~(uint64_t) 3;
  uint64_t cend = b->coffset + total;
  int r;

  if (cend > lower->size || cend < b->coffset)
    return error_set (EIO, "xz: %s: block %zu lies past the end of the "
                      "file", src, n);
  *got = total < INPUT_CHUNK ? (size_t) total : INPUT_CHUNK;
  if (total > *got)
    /* A transport that fetches (HTTP) brings the rest in the background
     * while the first piece decodes. */
    layer_prefetch (lower, b->coffset + *got, total - *got);
  r = layer_pread (lower, in, *got, b->coffset);
  if (r < 0)
    return error_prefix (-r, "xz: %s: block %zu: reading compressed data",
                         src, n);
  *cpos = b->coffset + *got;
  return 0;
}

/* Decode the header of block b from the first piece in (got bytes)
 * into blk and start strm on the rest of the piece.  liblzma keeps a
 * pointer to blk while decoding, so it belongs to the caller, who frees
 * filters' options once decoding ends. */
static int
block_start (const char *src, const struct xz_block *b, size_t n,
             lzma_stream *strm, unsigned char *in, size_t got,
             lzma_block *blk, lzma_filter *filters)
{
  uint64_t need;
  lzma_ret ret;

  if (in[0] == 0)
    return error_set (EIO, "xz: %s: block %zu: no block header where the "
                      "index says", src, n);
  memset (blk, 0, sizeof *blk);
  memset (filters, 0, sizeof *filters * (LZMA_FILTERS_MAX + 1));
  filters[0].id = LZMA_VLI_UNKNOWN;
  blk->version = 1;
  blk->check = (lzma_check) b->check;
  blk->header_size = lzma_block_header_size_decode (in[0]);
  blk->filters = filters;
  if (blk->header_size > got)
    return error_set (EIO, "xz: %s: block %zu: header larger than the "
                      "block", src, n);
  ret = lzma_block_header_decode (blk, NULL, in);
  if (ret != LZMA_OK)
    return decode_error (ret, src, b, n);
  ret = lzma_block_compressed_size (blk, b->unpadded);
  if (ret != LZMA_OK
      || (blk->uncompressed_size != LZMA_VLI_UNKNOWN
          && blk->uncompressed_size != b->usize))
    {
      free_filters (filters);
      return error_set (EIO, "xz: %s: block %zu: header and index disagree "
                        "on its size", src, n);
    }
  blk->uncompressed_size = b->usize;
  need = lzma_raw_decoder_memusage (filters);
  if (need > XZ_DECODER_MEMLIMIT)
    {
      free_filters (filters);
      return xz_memlimit_error (src, need, b, n);
    }
  ret = lzma_block_decoder (strm, blk);
  if (ret != LZMA_OK)
    {
      free_filters (filters);
      return decode_error (ret, src, b, n);
    }
  strm->next_in = in + blk->header_size;
  strm->avail_in = got - blk->header_size;
  return 0;
}

/* Read the first piece of block b and start strm on it (the two steps
 * above); on success *cpos is the file offset after the piece. */
static int
block_begin (struct layer *lower, const char *src, const struct xz_block *b,
             size_t n, lzma_stream *strm, unsigned char *in, lzma_block *blk,
             lzma_filter *filters, uint64_t *cpos)
{
  size_t got;
  int r = block_read_first (lower, src, b, n, in, &got, cpos);

  return r < 0 ? r : block_start (src, b, n, strm, in, got, blk, filters);
}

/* Refill in from lower when strm has used it up (up to cend).  Returns
 * 0 or a negative errno with a message. */
static int
block_feed (struct layer *lower, const char *src, size_t n,
            lzma_stream *strm, unsigned char *in, uint64_t *cpos,
            uint64_t cend)
{
  size_t got;
  int r;

  if (strm->avail_in > 0 || *cpos >= cend)
    return 0;
  got = cend - *cpos < INPUT_CHUNK ? (size_t) (cend - *cpos) : INPUT_CHUNK;
  r = layer_pread (lower, in, got, *cpos);
  if (r < 0)
    return error_prefix (-r, "xz: %s: block %zu: reading compressed data",
                         src, n);
  *cpos += got;
  strm->next_in = in;
  strm->avail_in = got;
  return 0;
}

/* True when the n bytes at p are all zero (memcmp of p against itself
 * shifted by one is libc's vectorised compare). */
static bool
is_zero (const unsigned char *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* Decode block b into buf (b->usize bytes), checking everything; or
 * recognise it by its bytes as a zero block seen before (zerosig.c). */
int
xz_block_decode (struct layer *lower, const char *src,
                 const struct xz_block *b, size_t n, void *buf,
                 struct xz_zero_sigs *zs)
{
  lzma_filter filters[LZMA_FILTERS_MAX + 1];
  lzma_block blk;
  struct decoder *d = decoder_get ();
  uint64_t cpos, cend = b->coffset + ((b->unpadded + 3) & ~(uint64_t) 3);
  unsigned char *out = buf;
  size_t pos = 0;       /* bytes of the block decoded so far */
  size_t first;         /* bytes of the first piece read, in d->in */
  bool zero = true;     /* all of them zero, and none written to buf */
  lzma_ret ret;
  int r;

  if (d == NULL)
    return error_set (ENOMEM, "xz: %s: out of memory", src);
  r = block_read_first (lower, src, b, n, d->in, &first, &cpos);
  if (r < 0)
    return r;
  /* The whole block is in d->in when the first piece reached its end. */
  if (zs && cpos == cend && xz_zero_sigs_match (zs, b, d->in))
    return XZ_BLOCK_ZERO;
  r = block_start (src, b, n, &d->strm, d->in, first, &blk, filters);
  if (r < 0)
    return r;
  for (;;)
    {
      unsigned char *start;
      size_t got;

      r = block_feed (lower, src, n, &d->strm, d->in, &cpos, cend);
      if (r < 0)
        {
          free_filters (filters);
          return r;
        }
      if (zero)
        {
          d->strm.next_out = d->scratch;
          d->strm.avail_out = b->usize - pos < ZERO_PIECE
            ? (size_t) (b->usize - pos) : ZERO_PIECE;
        }
      else
        {
          d->strm.next_out = out + pos;
          d->strm.avail_out = b->usize - pos;
        }
      start = d->strm.next_out;
      ret = lzma_code (&d->strm, cpos < cend ? LZMA_RUN : LZMA_FINISH);
      got = (size_t) (d->strm.next_out - start);
      if (zero && !is_zero (start, got))
        {
          memset (out, 0, pos);
          memcpy (out + pos, start, got);
          zero = false;
        }
      pos += got;
      if (ret == LZMA_STREAM_END)
        break;
      if (ret != LZMA_OK)
        {
          free_filters (filters);
          return decode_error (ret, src, b, n);
        }
    }
  free_filters (filters);
  if (pos != b->usize || d->strm.avail_in != 0 || cpos != cend)
    return error_set (EIO, "xz: %s: block %zu: sizes do not match the "
                      "index", src, n);
  /* Verified zeroes; d->in still holds the whole block when it was read
   * in one piece. */
  if (zero && zs && first == cend - b->coffset)
    xz_zero_sigs_record (zs, b, d->in);
  return zero ? XZ_BLOCK_ZERO : 0;
}

/* Decode the first segments of block b, up to and including segment
 * last, handing each to fn as it completes.  Uses its own decoder, freed
 * before returning, so the caller's thread keeps no dictionary. */
int
xz_block_decode_head (struct layer *lower, const char *src,
                      const struct xz_block *b, size_t n, size_t seg_size,
                      size_t last, xz_segment_fn fn, void *opaque)
{
  lzma_filter filters[LZMA_FILTERS_MAX + 1];
  lzma_block blk;
  lzma_stream strm = LZMA_STREAM_INIT;
  uint64_t cpos, cend = b->coffset + ((b->unpadded + 3) & ~(uint64_t) 3);
  unsigned char *in = malloc (INPUT_CHUNK), *out = malloc (seg_size);
  size_t seg = 0;
  lzma_ret ret;
  int r;

  if (in == NULL || out == NULL)
    {
      free (in);
      free (out);
      return error_set (ENOMEM, "xz: %s: out of memory", src);
    }
  r = block_begin (lower, src, b, n, &strm, in, &blk, filters, &cpos);
  if (r < 0)
    goto out;
  while (r == 0 && seg <= last)
    {
      uint64_t start = (uint64_t) seg * seg_size;
      size_t len = b->usize - start < seg_size
                   ? (size_t) (b->usize - start) : seg_size;

      strm.next_out = out;
      strm.avail_out = len;
      while (r == 0 && strm.avail_out > 0)
        {
          r = block_feed (lower, src, n, &strm, in, &cpos, cend);
          if (r < 0)
            break;
          ret = lzma_code (&strm, cpos < cend ? LZMA_RUN : LZMA_FINISH);
          if (ret == LZMA_STREAM_END && strm.avail_out == 0)
            break;
          if (ret != LZMA_OK)
            r = ret == LZMA_STREAM_END
                ? error_set (EIO, "xz: %s: block %zu: sizes do not match "
                             "the index", src, n)
                : decode_error (ret, src, b, n);
        }
      if (r == 0)
        r = fn (opaque, seg, out, len);
      seg++;
    }
  free_filters (filters);
 out:
  lzma_end (&strm);
  free (in);
  free (out);
  return r;
}
