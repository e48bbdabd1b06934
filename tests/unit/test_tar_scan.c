/* Unit tests of the tar layer's scan (backends/tar/scan.c) over an
 * in-memory layer holding ustar archives built here byte by byte, and of
 * the closest-name suggestions (backends/tar/suggest.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"
#include "layer.h"
#include "stack.h"
#include "tar-internal.h"

#include "check.h"

/* A layer over a buffer that counts what is read from it. */
struct mem_layer
{
  struct layer layer;
  const unsigned char *data;
  uint64_t bytes_read;
};

/* Copy from the buffer, counting. */
static int
mem_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct mem_layer *m = (struct mem_layer *) l;

  memcpy (buf, m->data + offset, count);
  m->bytes_read += count;
  return 0;
}

/* The buffer is the caller's: free only the struct. */
static void
mem_close (struct layer *l)
{
  free (l);
}

static const struct layer_ops mem_ops = {
  .name = "mem", .pread = mem_pread, .close = mem_close,
};

/* A new counting layer over size bytes at data (borrowed). */
static struct mem_layer *
mem_new (const unsigned char *data, uint64_t size)
{
  struct mem_layer *m = calloc (1, sizeof *m);

  m->layer.ops = &mem_ops;
  m->layer.size = size;
  m->layer.immutable = true;
  m->data = data;
  return m;
}

/* Write one ustar header for a regular file at h (512 bytes). */
static void
ustar_header (unsigned char *h, const char *name, uint64_t size, char type)
{
  unsigned sum = 0;

  memset (h, 0, 512);
  snprintf ((char *) h, 100, "%s", name);
  memcpy (h + 100, "0000644", 8);
  memcpy (h + 108, "0000000", 8);
  memcpy (h + 116, "0000000", 8);
  snprintf ((char *) h + 124, 12, "%011llo", (unsigned long long) size);
  memcpy (h + 136, "14000000000", 12);
  h[156] = (unsigned char) type;
  memcpy (h + 257, "ustar", 6);
  memcpy (h + 263, "00", 2);
  memset (h + 148, ' ', 8);
  for (int i = 0; i < 512; i++)
    sum += h[i];
  snprintf ((char *) h + 148, 8, "%06o", sum);
  h[155] = ' ';
}

/* An archive of members with the given names and sizes, data bytes
 * being (member index + offset) & 0xff.  Returns the buffer and *size. */
static unsigned char *
ustar_archive (const char **names, const uint64_t *sizes, int n,
               uint64_t *size)
{
  uint64_t total = 1024;
  unsigned char *a, *p;

  for (int i = 0; i < n; i++)
    total += 512 + (sizes[i] + 511) / 512 * 512;
  a = calloc (1, total);
  p = a;
  for (int i = 0; i < n; i++)
    {
      ustar_header (p, names[i], sizes[i], '0');
      p += 512;
      for (uint64_t j = 0; j < sizes[i]; j++)
        p[j] = (unsigned char) (i * 31 + j);
      p += (sizes[i] + 511) / 512 * 512;
    }
  *size = total;
  return a;
}

/* The last of three members is found at the right offset by reading
 * headers only: the 8 MiB member before it is skipped. */
static void
test_find_and_skip (void)
{
  const char *names[] = { "first.bin", "big.img", "last.bin" };
  const uint64_t sizes[] = { 1000, 8 << 20, 5000 };
  uint64_t size;
  unsigned char *a = ustar_archive (names, sizes, 3, &size);
  struct mem_layer *m = mem_new (a, size);
  struct tar_member t;

  CHECK (tar_scan (&m->layer, "test.tar", "last.bin", 0, &t) == 0);
  CHECK (t.data_offset == 512 + 1024 + 512 + (8 << 20) + 512);
  CHECK (t.size == 5000);
  CHECK (t.headers == 3);
  CHECK (a[t.data_offset + 7] == (unsigned char) (2 * 31 + 7));
  CHECK (m->bytes_read < 256 * 1024);
  CHECK (tar_scan (&m->layer, "test.tar", "./big.img", 0, &t) == 0);
  CHECK (t.data_offset == 512 + 1024 + 512 && t.size == (8 << 20));
  mem_close (&m->layer);
  free (a);
}

/* Missing members name the closest ones; damage and truncation are
 * errors, never a window. */
static void
test_errors (void)
{
  const char *names[] = { "disk1.vmdk", "disk2.vmdk", "vm.ovf" };
  const uint64_t sizes[] = { 3000, 4000, 100 };
  uint64_t size;
  unsigned char *a = ustar_archive (names, sizes, 3, &size);
  struct mem_layer *m = mem_new (a, size);
  struct tar_member t;

  CHECK (tar_scan (&m->layer, "t.tar", "disk1.vmkd", 0, &t) == -ENOENT);
  CHECK (strstr (error_message (), "closest: 'disk1.vmdk'") != NULL);
  CHECK (tar_scan (&m->layer, "t.tar", "VM.OVF", 0, &t) == -ENOENT);
  CHECK (strstr (error_message (), "closest: 'vm.ovf'") != NULL);

  /* A scan limit smaller than the headers before the member. */
  CHECK (tar_scan (&m->layer, "t.tar", "vm.ovf", 1024, &t) == -EFBIG);
  CHECK (strstr (error_message (), "scan-limit") != NULL);

  /* Truncated inside the member's data. */
  m->layer.size = 512 + 3000 / 2;
  CHECK (tar_scan (&m->layer, "t.tar", "disk1.vmdk", 0, &t) < 0);
  CHECK (strstr (error_message (), "truncated") != NULL);
  m->layer.size = size;

  /* A damaged header (checksum) before the member. */
  a[512 + 3072 + 3] ^= 0x55;
  CHECK (tar_scan (&m->layer, "t.tar", "vm.ovf", 0, &t) == -EIO);
  CHECK (strstr (error_message (), "Damaged") != NULL);
  CHECK (tar_scan (&m->layer, "t.tar", "disk1.vmdk", 0, &t) == 0);

  /* Not a tar at all. */
  memset (a, 'x', 1024);
  CHECK (tar_scan (&m->layer, "t.tar", "disk1.vmdk", 0, &t) == -EIO);
  CHECK (strstr (error_message (), "not a tar archive") != NULL);
  mem_close (&m->layer);
  free (a);
}

/* Put a GNU base-256 size into header h and fix its checksum. */
static void
set_base256_size (unsigned char *h, uint64_t size)
{
  unsigned sum = 0;

  memset (h + 124, 0, 12);
  h[124] = 0x80;
  for (int i = 0; i < 8; i++)
    h[135 - i] = (unsigned char) (size >> (8 * i));
  memset (h + 148, ' ', 8);
  for (int i = 0; i < 512; i++)
    sum += h[i];
  snprintf ((char *) h + 148, 8, "%06o", sum);
  h[155] = ' ';
}

/* A pax extended header or GNU long name claiming gigabytes is refused
 * with a message naming it, its offset and what it claims, before any
 * of it is read: the archive here holds none of those bytes. */
static void
test_huge_special_headers (void)
{
  const char *names[] = { "a", "b" };
  const uint64_t sizes[] = { 700, 10 };
  static const char rec[] = "30 path=aaaaaaaaaaaaaaaaaaaaa\n";
  uint64_t size;
  unsigned char *a = ustar_archive (names, sizes, 2, &size);
  unsigned char *b = calloc (1, 8192);
  struct mem_layer *m = mem_new (a, size);
  struct tar_member t;

  /* "b"'s header (at 1536) becomes a pax header claiming 1 GiB. */
  ustar_header (a + 1536, "././@PaxHeader", 1ull << 30, 'x');
  CHECK (tar_scan (&m->layer, "t.tar", "b", 0, &t) == -EFBIG);
  CHECK (strstr (error_message (), "t.tar: header at offset 1536: a pax "
                 "extended header claiming 1073741824 bytes, more than the "
                 "1 MiB accepted") != NULL);
  CHECK (m->bytes_read < 64 * 1024);
  mem_close (&m->layer);

  /* A sane pax header, then a GNU long name claiming 5 TiB (base-256). */
  ustar_header (b, "././@PaxHeader", sizeof rec - 1, 'x');
  memcpy (b + 512, rec, sizeof rec - 1);
  ustar_header (b + 1024, "././@LongLink", 0, 'L');
  set_base256_size (b + 1024, 5ull << 40);
  m = mem_new (b, 8192);
  CHECK (tar_scan (&m->layer, "t.tar", "b", 0, &t) == -EFBIG);
  CHECK (strstr (error_message (), "header at offset 1024: a GNU long name "
                 "claiming 5497558138880 bytes") != NULL);
  mem_close (&m->layer);
  free (a);
  free (b);

  /* Five pax headers of 1 MiB each (the most libarchive takes one at a
   * time) in a row: reading stops after 4 MiB. */
  {
    size_t each = 1 << 20, total = 5 * (512 + each) + 2048;
    unsigned char *c = calloc (1, total), *p = c;

    for (int i = 0; i < 5; i++)
      {
        ustar_header (p, "././@PaxHeader", each, 'x');
        p += 512;
        snprintf ((char *) p, 20, "%zu comment=", each);
        memset (p + 16, 'c', each - 17);
        p[each - 1] = '\n';
        p += each;
      }
    m = mem_new (c, total);
    CHECK (tar_scan (&m->layer, "t.tar", "b", 0, &t) == -EFBIG);
    CHECK (strstr (error_message (), "more than 4 MiB of extension headers "
                   "(pax, GNU) before one member") != NULL);
    CHECK (m->bytes_read < 6u << 20);
    mem_close (&m->layer);
    free (c);
  }
}

/* The layer is a window: reads land at the member's bytes. */
static void
test_layer_window (void)
{
  const char *names[] = { "a", "b" };
  const uint64_t sizes[] = { 700, 1300 };
  uint64_t size;
  unsigned char *a = ustar_archive (names, sizes, 2, &size);
  struct mem_layer *m = mem_new (a, size);
  struct entry_config e = { .source = (char *) "w.tar" };
  struct stack_context ctx = { .entry = &e };
  struct layer *l;
  unsigned char buf[1300];

  CHECK (layer_tar_open (&ctx, &m->layer, "b", &l) == 0);
  CHECK (l->size == 1300 && !l->writable && l->immutable);
  CHECK (layer_pread (l, buf, 1300, 0) == 0);
  CHECK (buf[0] == 31 && buf[1299] == (unsigned char) (31 + 1299));
  CHECK (layer_pread (l, buf, 2, 1299) < 0);
  CHECK (layer_pwrite (l, buf, 1, 0) == -EROFS);
  layer_close (l);   /* closes m too */
  free (a);
}

/* Ranking of names by closeness. */
static void
test_suggest (void)
{
  struct tar_suggest *s = tar_suggest_new ("./images/disk.qcow2");
  char buf[256];
  size_t len;

  tar_suggest_add (s, "README");
  tar_suggest_add (s, "images/disk.img");
  tar_suggest_add (s, "other/DISK.QCOW2");
  tar_suggest_add (s, "images/disk.qcow2.sha256");
  tar_suggest_add (s, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz");
  tar_suggest_add (s, "a");
  tar_suggest_add (s, "b");
  tar_suggest_format (s, buf, sizeof buf);
  CHECK (strncmp (buf, "'other/DISK.QCOW2', 'images/disk.qcow2.sha256', "
                  "'images/disk.img'", 65) == 0);
  CHECK (strstr (buf, "zzzz") == NULL);
  tar_suggest_free (s);

  CHECK (strcmp (tar_name_trim ("./a/b/", &len), "a/b/") == 0 && len == 3);
  CHECK (strcmp (tar_name_trim ("/./x", &len), "x") == 0 && len == 1);
}

int
main (void)
{
  test_find_and_skip ();
  test_errors ();
  test_huge_special_headers ();
  test_layer_window ();
  test_suggest ();
  if (check_failures)
    fprintf (stderr, "%d check(s) failed\n", check_failures);
  return check_failures ? 1 : 0;
}
