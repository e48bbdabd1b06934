/* Fuzz harness: the disk cache's object file loader
 * (cache/diskcache-file.c's dc_file_load: header, validators, bitmap),
 * on a torn or tampered cache file.
 *
 * Input: 1 flag byte, then the file's bytes.  With flag bit 0 the
 * harness first repairs what a random file almost never gets right (the
 * format version, the header checksum and the file length the geometry
 * implies) so that the bitmap loader is reached too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diskcache-internal.h"

/* Little-endian helpers, as in the file format. */
static uint64_t
get_le (const uint8_t *p, int n)
{
  uint64_t v = 0;

  for (int i = 0; i < n; i++)
    v |= (uint64_t) p[i] << (8 * i);
  return v;
}

static void
put_le (uint8_t *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = (uint8_t) (v >> (8 * i));
}

/* Make the format version, the header checksum and the file length
 * consistent (the .dsc holds the header and the bitmap; the data lives
 * in the .dsd, which the loader does not read). */
static uint64_t
repair (uint8_t *buf, size_t size)
{
  uint64_t header_len, fsize, bmo, dao, h = 0xcbf29ce484222325ull;

  if (size < 48)
    return size;
  put_le (buf + 8, DC_FORMAT_VERSION, 4);
  header_len = get_le (buf + 12, 4);
  fsize = get_le (buf + 16, 8) % (DISK_CACHE_MAX_SIZE + 1);
  put_le (buf + 16, fsize, 8);
  dc_geometry (fsize, header_len, &bmo, &dao);
  put_le (buf + 32, bmo, 8);
  put_le (buf + 40, dao, 8);
  if (header_len >= 16 && header_len <= size)
    {
      for (size_t i = 0; i < header_len - 8; i++)
        {
          h ^= buf[i];
          h *= 0x100000001b3ull;
        }
      put_le (buf + header_len - 8, h, 8);
    }
  return dao;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct dc_header h;
  struct disk_cache_validators v = { "http", "http://fuzz/x", 0, NULL, NULL };
  uint8_t *buf;
  uint64_t *present = NULL, length;
  size_t npresent = 0;
  int fd;

  if (size < 1)
    return 0;
  buf = malloc (size);
  if (buf == NULL)
    return 0;
  memcpy (buf, data + 1, size - 1);
  length = size - 1;
  if (data[0] & 1)
    length = repair (buf, size - 1);
  fd = memfd_create ("fuzz-dsc", MFD_CLOEXEC);
  if (fd >= 0)
    {
      if (write (fd, buf, size - 1) == (ssize_t) (size - 1)
          && ftruncate (fd, (off_t) length) == 0
          && dc_file_load (fd, &h, 64ull << 20, &present, &npresent) == 0)
        {
          v.size = h.size;
          dc_header_matches (&h, &v);
          for (size_t i = 0; i < npresent; i++)
            dc_chunk_len (h.size, present[i]);
          free (present);
          dc_header_free (&h);
        }
      close (fd);
    }
  free (buf);
  return 0;
}
