/* Unit tests of the decoded-block cache (cache/blockcache.c): single
 * flight, the byte bound, failures, read-ahead, freeing a client while
 * its read-ahead is queued, zero blocks kept as holes, clients of
 * one source sharing blocks, and blocks held by sequential readers
 * until they have read them whole. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockcache.h"
#include "error.h"

#include "check.h"

#define BLOCK 65536

static atomic_uint decodes;
static atomic_uint fail_index_calls;
static uint64_t fail_index = UINT64_MAX;

/* Fill a block with bytes derived from its index; block fail_index fails. */
static int
fake_decode (void *opaque, uint64_t index, void *buf, size_t size)
{
  unsigned char *p = buf;
  size_t i;

  (void) opaque;
  atomic_fetch_add (&decodes, 1);
  usleep (20000);               /* long enough for readers to pile up */
  if (index == fail_index)
    {
      atomic_fetch_add (&fail_index_calls, 1);
      return error_set (EIO, "fake: block %llu is bad",
                        (unsigned long long) index);
    }
  for (i = 0; i < size; i++)
    p[i] = (unsigned char) (index * 31 + i);
  return 0;
}

/* True when buf holds bytes [off, off+n) of block index. */
static int
check_bytes (const unsigned char *buf, uint64_t index, size_t off, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (buf[i] != (unsigned char) (index * 31 + off + i))
      return 0;
  return 1;
}

struct reader_arg
{
  struct block_cache_client *client;
  uint64_t index;
  int result;
};

/* One concurrent reader of a block. */
static void *
reader (void *p)
{
  struct reader_arg *a = p;
  unsigned char buf[4096];

  a->result = block_cache_read (a->client, a->index, BLOCK, 1000, buf,
                                sizeof buf, false);
  if (a->result == 0 && !check_bytes (buf, a->index, 1000, sizeof buf))
    a->result = -EBADMSG;
  return NULL;
}

/* Eight threads missing on one block decode it once. */
static void
test_single_flight (struct block_cache *cache)
{
  struct block_cache_client *client;
  pthread_t t[8];
  struct reader_arg a[8];
  int i;

  if (block_cache_client_new (cache, "sf", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  atomic_store (&decodes, 0);
  for (i = 0; i < 8; i++)
    {
      a[i] = (struct reader_arg) { client, 7, -1 };
      pthread_create (&t[i], NULL, reader, &a[i]);
    }
  for (i = 0; i < 8; i++)
    {
      pthread_join (t[i], NULL);
      CHECK (a[i].result == 0);
    }
  CHECK (atomic_load (&decodes) == 1);
  block_cache_client_free (client);
  printf ("single flight: ok\n");
}

/* Reading many blocks keeps the cache under its bound, and hits work. */
static void
test_bound (struct block_cache *cache)
{
  struct block_cache_client *client;
  struct block_cache_stats st;
  unsigned char buf[100];
  uint64_t i;

  if (block_cache_client_new (cache, "bound", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  for (i = 0; i < 40; i++)
    {
      CHECK (block_cache_read (client, i, BLOCK, 5, buf, sizeof buf, false)
             == 0);
      CHECK (check_bytes (buf, i, 5, sizeof buf));
      block_cache_get_stats (cache, &st);
      CHECK (st.used_bytes <= st.max_bytes);
    }
  atomic_store (&decodes, 0);
  CHECK (block_cache_read (client, 39, BLOCK, 0, buf, sizeof buf, false) == 0);
  CHECK (atomic_load (&decodes) == 0);          /* a hit */
  block_cache_get_stats (cache, &st);
  CHECK (st.evictions > 0);
  block_cache_client_free (client);
  block_cache_get_stats (cache, &st);
  CHECK (st.used_bytes == 0 && st.entries == 0);
  printf ("bound: ok\n");
}

/* A failing block gives its errno and message, is not kept, and other
 * blocks of the same client still read. */
static void
test_failure (struct block_cache *cache)
{
  struct block_cache_client *client;
  unsigned char buf[10];

  if (block_cache_client_new (cache, "fail", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  fail_index = 3;
  CHECK (block_cache_read (client, 3, BLOCK, 0, buf, sizeof buf, false)
         == -EIO);
  CHECK (strstr (error_message (), "block 3 is bad") != NULL);
  CHECK (block_cache_read (client, 3, BLOCK, 0, buf, sizeof buf, false)
         == -EIO);
  CHECK (atomic_load (&fail_index_calls) == 2);  /* tried again */
  CHECK (block_cache_read (client, 4, BLOCK, 0, buf, sizeof buf, false) == 0);
  fail_index = UINT64_MAX;
  block_cache_client_free (client);
  printf ("failure: ok\n");
}

/* Read-ahead decodes in the background; a later read is a hit. */
static void
test_prefetch (struct block_cache *cache)
{
  struct block_cache_client *client;
  struct block_cache_stats before, after;
  unsigned char buf[10];
  int i;

  if (block_cache_client_new (cache, "ahead", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  block_cache_get_stats (cache, &before);
  CHECK (block_cache_prefetch (client, 1, BLOCK));
  CHECK (block_cache_prefetch (client, 2, BLOCK));
  for (i = 0; i < 200; i++)
    {
      block_cache_get_stats (cache, &after);
      if (after.decoded_blocks >= before.decoded_blocks + 2)
        break;
      usleep (10000);
    }
  block_cache_get_stats (cache, &before);
  CHECK (block_cache_read (client, 2, BLOCK, 0, buf, sizeof buf, false) == 0);
  block_cache_get_stats (cache, &after);
  CHECK (after.hits == before.hits + 1);
  /* Queue more read-ahead than can run, then free the client at once. */
  for (i = 10; i < 14; i++)
    block_cache_prefetch (client, i, BLOCK);
  block_cache_client_free (client);
  block_cache_get_stats (cache, &after);
  CHECK (after.used_bytes == 0);
  printf ("prefetch: ok\n");
}

/* A client whose decoder queues the next block itself, as the xz layer
 * extends its read-ahead when a block turns out zero. */
struct chain
{
  struct block_cache_client *client;
  uint64_t last;                /* no prefetch past it */
  atomic_uint calls;
};

/* Decode block index as zeroes after a little work, and queue index + 1. */
static int
chain_decode (void *opaque, uint64_t index, void *buf, size_t size)
{
  struct chain *ch = opaque;

  (void) buf;
  (void) size;
  atomic_fetch_add (&ch->calls, 1);
  usleep (2000);
  if (index < ch->last)
    block_cache_prefetch (ch->client, index + 1, BLOCK);
  return BLOCK_CACHE_ZERO;
}

/* Prefetch from a decode callback: the chain runs to its end; and a
 * client freed while its callback keeps queueing goes cleanly (the
 * callback's prefetch is refused, nothing is left behind). */
static void
test_prefetch_from_decode (struct block_cache *cache)
{
  struct chain ch = { .last = 40 };
  struct block_cache_stats st;
  unsigned char buf[8];
  int i;

  if (block_cache_client_new (cache, "chain", NULL, chain_decode, &ch,
                              &ch.client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  CHECK (block_cache_read (ch.client, 0, BLOCK, 0, buf, sizeof buf, false)
         == BLOCK_CACHE_ZERO);
  for (i = 0; i < 500 && !block_cache_has (ch.client, 40); i++)
    usleep (10000);
  for (i = 0; i < 500 && atomic_load (&ch.calls) < 41; i++)
    usleep (10000);
  CHECK (atomic_load (&ch.calls) == 41);
  CHECK (block_cache_read (ch.client, 40, BLOCK, 0, buf, sizeof buf, false)
         == BLOCK_CACHE_ZERO);
  CHECK (atomic_load (&ch.calls) == 41);        /* a hit */
  block_cache_client_free (ch.client);

  /* An endless chain, freed while it runs. */
  ch.last = UINT64_MAX;
  atomic_store (&ch.calls, 0);
  if (block_cache_client_new (cache, "endless", NULL, chain_decode, &ch,
                              &ch.client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  CHECK (block_cache_prefetch (ch.client, 1000, BLOCK));
  for (i = 0; i < 500 && atomic_load (&ch.calls) < 5; i++)
    usleep (10000);
  CHECK (atomic_load (&ch.calls) >= 5);
  block_cache_client_free (ch.client);
  block_cache_get_stats (cache, &st);
  CHECK (st.used_bytes == 0 && st.entries == 0);
  printf ("prefetch from a decode callback: ok\n");
}

/* A decoder whose even blocks are all zero. */
static int
zero_decode (void *opaque, uint64_t index, void *buf, size_t size)
{
  atomic_fetch_add (&decodes, 1);
  if (index % 2 == 0)
    return BLOCK_CACHE_ZERO;
  return fake_decode (opaque, index, buf, size);
}

/* A zero block is answered with zeroes and costs (almost) no memory. */
static void
test_zero (struct block_cache *cache)
{
  struct block_cache_client *client;
  struct block_cache_stats st;
  unsigned char buf[100], zeros[100] = { 0 };

  if (block_cache_client_new (cache, "zero", NULL, zero_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  memset (buf, 0xff, sizeof buf);
  CHECK (block_cache_read (client, 2, BLOCK, 7, buf, sizeof buf, false)
         == BLOCK_CACHE_ZERO);
  CHECK (memcmp (buf, zeros, sizeof buf) == 0);
  CHECK (block_cache_read (client, 3, BLOCK, 7, buf, sizeof buf, false) == 0);
  CHECK (check_bytes (buf, 3, 7, sizeof buf));
  block_cache_get_stats (cache, &st);
  CHECK (st.zero_blocks >= 1);
  CHECK (st.used_bytes < BLOCK + 4096);
  block_cache_client_free (client);
  printf ("zero: ok\n");
}

/* A lent block gives its bytes in place, survives reads of many other
 * blocks while lent (they would evict it otherwise), and is evictable
 * once given back; a zero block lends nothing and says so. */
static void
test_borrow (struct block_cache *cache)
{
  struct block_cache_client *client;
  struct block_cache_loan *loan;
  struct block_cache_stats st;
  const void *data;
  unsigned char buf[100];
  uint64_t i;

  if (block_cache_client_new (cache, "borrow", NULL, zero_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  CHECK (block_cache_borrow (client, 1, BLOCK, 300, 5000, false, &data,
                             &loan) == 0);
  CHECK (data && loan && check_bytes (data, 1, 300, 5000));
  for (i = 3; i < 40; i += 2)
    CHECK (block_cache_read (client, i, BLOCK, 0, buf, sizeof buf, false)
           == 0);
  block_cache_get_stats (cache, &st);
  CHECK (st.evictions > 0 && st.used_bytes <= st.max_bytes);
  CHECK (check_bytes (data, 1, 300, 5000));     /* still in place */
  atomic_store (&decodes, 0);
  CHECK (block_cache_read (client, 1, BLOCK, 0, buf, sizeof buf, false)
         == 0);
  CHECK (atomic_load (&decodes) == 0);          /* never evicted */
  block_cache_loan_return (loan);
  CHECK (block_cache_borrow (client, 2, BLOCK, 0, 100, false, &data, &loan)
         == BLOCK_CACHE_ZERO);
  CHECK (data == NULL && loan == NULL);
  CHECK (block_cache_borrow (client, 1, BLOCK, BLOCK - 10, 11, false, &data,
                             &loan) == -EINVAL);
  block_cache_client_free (client);
  block_cache_get_stats (cache, &st);
  CHECK (st.used_bytes == 0 && st.entries == 0);
  printf ("borrow: ok\n");
}

/* Two clients with one key share blocks; another key does not. */
static void
test_shared (struct block_cache *cache)
{
  struct block_cache_client *a, *b, *other;
  unsigned char buf[64];

  CHECK (block_cache_client_new (cache, "a", "src 1", fake_decode, NULL,
                                 &a) == 0);
  CHECK (block_cache_client_new (cache, "b", "src 1", fake_decode, NULL,
                                 &b) == 0);
  CHECK (block_cache_client_new (cache, "o", "src 2", fake_decode, NULL,
                                 &other) == 0);
  atomic_store (&decodes, 0);
  CHECK (block_cache_read (a, 5, BLOCK, 0, buf, sizeof buf, false) == 0);
  CHECK (block_cache_read (b, 5, BLOCK, 0, buf, sizeof buf, false) == 0);
  CHECK (check_bytes (buf, 5, 0, sizeof buf));
  CHECK (atomic_load (&decodes) == 1);
  CHECK (block_cache_read (other, 5, BLOCK, 0, buf, sizeof buf, false) == 0);
  CHECK (atomic_load (&decodes) == 2);
  /* The first client goes: the blocks stay for the second. */
  block_cache_client_free (a);
  CHECK (block_cache_read (b, 5, BLOCK, 0, buf, sizeof buf, false) == 0);
  CHECK (atomic_load (&decodes) == 2);
  CHECK (block_cache_prefetch (b, 6, BLOCK));
  block_cache_client_free (b);
  block_cache_client_free (other);
  printf ("shared: ok\n");
}

/* A sequential reader of blocks first..first+nblocks-1 of its client,
 * in eighths with a pause between reads, holding the block it is in. */
struct stream_arg
{
  struct block_cache_client *client;
  uint64_t first, nblocks;
  int result;
};

static void *
stream_reader (void *p)
{
  struct stream_arg *a = p;
  unsigned char buf[BLOCK / 8];
  uint64_t b;
  size_t off;

  a->result = 0;
  for (b = a->first; b < a->first + a->nblocks && a->result == 0; b++)
    for (off = 0; off < BLOCK && a->result == 0; off += sizeof buf)
      {
        a->result = block_cache_read (a->client, b, BLOCK, off, buf,
                                      sizeof buf, true);
        if (a->result == 0 && !check_bytes (buf, b, off, sizeof buf))
          a->result = -EBADMSG;
        usleep (2000);          /* the reader's own work between reads */
      }
  return NULL;
}

/* More sequential readers than blocks fit: they take turns instead of
 * evicting each other's block between two reads, so every block is
 * decoded once (before holds: about one decode per read), and the
 * cache stays within its bound. */
static void
test_readers_take_turns (void)
{
  enum { READERS = 6, BLOCKS = 4 };
  struct block_cache *cache;
  struct block_cache_client *client[READERS];
  struct stream_arg a[READERS];
  struct block_cache_stats st;
  pthread_t t[READERS];
  int i;

  CHECK (block_cache_new (4 * BLOCK, 2, &cache) == 0);
  for (i = 0; i < READERS; i++)
    CHECK (block_cache_client_new (cache, "turns", NULL, fake_decode, NULL,
                                   &client[i]) == 0);
  atomic_store (&decodes, 0);
  for (i = 0; i < READERS; i++)
    {
      a[i] = (struct stream_arg) { client[i], 0, BLOCKS, -1 };
      pthread_create (&t[i], NULL, stream_reader, &a[i]);
    }
  for (i = 0; i < READERS; i++)
    {
      pthread_join (t[i], NULL);
      CHECK (a[i].result == 0);
    }
  block_cache_get_stats (cache, &st);
  printf ("take turns: %u decodes for %d blocks, %llu waits, "
          "%llu evictions\n", atomic_load (&decodes), READERS * BLOCKS,
          (unsigned long long) st.room_waits,
          (unsigned long long) st.evictions);
  CHECK (atomic_load (&decodes) == READERS * BLOCKS);
  CHECK (st.room_waits > 0);
  CHECK (st.hold_breaks == 0);
  CHECK (st.used_bytes <= st.max_bytes);
  for (i = 0; i < READERS; i++)
    block_cache_client_free (client[i]);
  block_cache_free (cache);
}

/* A cache of four blocks with two clients: a sequential reader and
 * another; the decode counter at zero. */
static struct block_cache *
four_block_cache (struct block_cache_client **seq,
                  struct block_cache_client **other)
{
  struct block_cache *cache;

  CHECK (block_cache_new (4 * BLOCK, 2, &cache) == 0);
  CHECK (block_cache_client_new (cache, "seq", NULL, fake_decode, NULL,
                                 seq) == 0);
  CHECK (block_cache_client_new (cache, "other", NULL, fake_decode, NULL,
                                 other) == 0);
  atomic_store (&decodes, 0);
  return cache;
}

/* A block a sequential reader is in survives another reader's misses
 * and read-ahead; read-ahead is refused while held blocks fill the
 * cache; a hold lapses when its reader stops reading. */
static void
test_held_block_survives (void)
{
  struct block_cache *cache;
  struct block_cache_client *seq, *other;
  struct block_cache_stats st;
  unsigned char buf[64];
  uint64_t i;

  cache = four_block_cache (&seq, &other);
  CHECK (block_cache_read (seq, 0, BLOCK, 0, buf, sizeof buf, true) == 0);
  for (i = 0; i < 6; i++)
    {
      /* Another reader's miss, then the sequential reader reads on in
       * block 0: a hit every time. */
      CHECK (block_cache_read (other, 100 + i, BLOCK, 0, buf, sizeof buf,
                               false) == 0);
      CHECK (block_cache_read (seq, 0, BLOCK, 64 * (i + 1), buf, sizeof buf,
                               true) == 0);
      CHECK (check_bytes (buf, 0, 64 * (i + 1), sizeof buf));
      CHECK (atomic_load (&decodes) == i + 2);
    }

  /* Three more held blocks fill the cache: no room for read-ahead. */
  for (i = 1; i < 4; i++)
    CHECK (block_cache_read (seq, i, BLOCK, 0, buf, sizeof buf, true) == 0);
  CHECK (!block_cache_prefetch (other, 200, BLOCK));

  /* Nobody reads on: a miss waits until the holds lapse, then goes. */
  CHECK (block_cache_read (other, 300, BLOCK, 0, buf, sizeof buf, false)
         == 0);
  block_cache_get_stats (cache, &st);
  CHECK (st.room_waits == 1);
  CHECK (st.hold_breaks == 0);
  CHECK (st.used_bytes <= st.max_bytes);
  block_cache_client_free (seq);
  block_cache_client_free (other);
  block_cache_free (cache);
  printf ("held block: ok\n");
}

/* The kernel's reads of one block arrive out of order: the one with
 * the block's last byte can come before those of its middle.  The
 * block stays held until its reads covered all of it, then is let go
 * (before: let go at the last byte, evicted by another reader's miss,
 * and decoded again for the middle). */
static void
test_hold_until_whole_block_read (void)
{
  struct block_cache *cache;
  struct block_cache_client *seq, *other;
  struct block_cache_stats st;
  static unsigned char buf[BLOCK];
  uint64_t i;

  cache = four_block_cache (&seq, &other);
  CHECK (block_cache_read (seq, 0, BLOCK, 0, buf, 64, true) == 0);
  CHECK (block_cache_read (seq, 0, BLOCK, BLOCK - 64, buf, 64, true) == 0);
  for (i = 0; i < 6; i++)
    CHECK (block_cache_read (other, 100 + i, BLOCK, 0, buf, 64, false) == 0);
  CHECK (atomic_load (&decodes) == 7);

  /* The middle comes last: still there. */
  CHECK (block_cache_read (seq, 0, BLOCK, 64, buf, BLOCK - 128, true) == 0);
  CHECK (check_bytes (buf, 0, 64, BLOCK - 128));
  CHECK (atomic_load (&decodes) == 7);

  /* Read whole, it is let go at once: misses evict it without waiting. */
  for (i = 0; i < 4; i++)
    CHECK (block_cache_read (other, 200 + i, BLOCK, 0, buf, 64, false) == 0);
  CHECK (!block_cache_has (seq, 0));
  block_cache_get_stats (cache, &st);
  CHECK (st.room_waits == 0);
  CHECK (st.hold_breaks == 0);
  block_cache_client_free (seq);
  block_cache_client_free (other);
  block_cache_free (cache);
  printf ("hold until the whole block is read: ok\n");
}

int
main (void)
{
  struct block_cache *cache;

  log_set_level (LOG_LEVEL_ERROR + 0);
  if (block_cache_new (8 * BLOCK, 2, &cache) != 0)
    {
      CHECK (!"block_cache_new");
      return 1;
    }
  CHECK (block_cache_workers (cache) == 2);
  test_single_flight (cache);
  test_bound (cache);
  test_failure (cache);
  test_prefetch (cache);
  test_prefetch_from_decode (cache);
  test_zero (cache);
  test_borrow (cache);
  test_shared (cache);
  block_cache_free (cache);
  test_readers_take_turns ();
  test_held_block_survives ();
  test_hold_until_whole_block_read ();
  if (check_failures)
    fprintf (stderr, "%d check(s) failed\n", check_failures);
  return check_failures ? 1 : 0;
}
