/* diskshelf: finding a tar member's data in the layer below.
 *
 * libarchive parses the headers (ustar, GNU long names and long links,
 * pax), reading through callbacks over the layer below.  The skip and
 * seek callbacks only move a position, so member data between headers is
 * never read: on a random-access layer (a plain tar, a multi-block xz)
 * reaching the last member costs one small read per header.
 *
 * When libarchive returns the wanted header, everything it consumed so
 * far is headers, so the number of bytes consumed (archive_filter_bytes)
 * is the data offset.  That offset is checked (block alignment, the
 * member fits in the archive) and then verified: the first bytes of the
 * member are read through libarchive and compared with the layer below
 * at that offset.  Any doubt is an error, never a window onto wrong
 * bytes.  Sparse members are refused: their data is not stored as one
 * run.
 */
#include "tar-internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "error.h"
#include "text.h"

/* Reads grow from MIN to MAX while libarchive reads on without skipping
 * (many small members), and fall back after a skip. */
#define SCAN_READ_MIN (16 * 1024)
#define SCAN_READ_MAX (1024 * 1024)

/* Bytes of a member compared through libarchive and directly. */
#define SCAN_VERIFY_BYTES 4096

/* How many hard links are followed to their target. */
#define SCAN_MAX_LINKS 8

#define TAR_BLOCK 512

/* The longest pax extended header or GNU long name/link accepted (the
 * headers libarchive reads into memory whole): real ones hold a few
 * names and times.  libarchive 3.6 refuses longer ones itself; this
 * says so in our words, whatever its version does. */
#define SCAN_SPECIAL_MAX (1024 * 1024)

/* Bytes read from the layer below between two headers libarchive
 * returns: the special headers in between plus at most two reads of
 * SCAN_READ_MAX.  More means a special header claiming a huge size is
 * being read into memory. */
#define SCAN_BETWEEN_HEADERS_MAX (SCAN_SPECIAL_MAX + 3 * SCAN_READ_MAX)

/* State shared by the libarchive callbacks during one pass. */
struct scan
{
  struct layer *lower;
  const char *source;
  uint64_t limit;
  uint64_t pos;          /* next byte the read callback returns */
  uint64_t bytes_read;   /* total read from lower, all passes */
  uint64_t since_header; /* read since libarchive returned a header */
  uint64_t next_header;  /* where the next header (chain) should start */
  size_t chunk;          /* size of the next read */
  char *buf;             /* SCAN_READ_MAX bytes */
  int io_errno;          /* failure inside a callback, 0 if none */
  char io_message[512];
  bool limit_hit;
  bool special_hit;      /* SCAN_BETWEEN_HEADERS_MAX reached */
  char shown[512];       /* the name looked for, escaped for messages */
};

/* Member names come from the archive (hard link and symlink targets,
 * names suggested) or the catalog: every byte outside printable ASCII
 * is escaped before a name goes into a message, so an archive cannot
 * forge log lines or send terminal escapes. */
#define SCAN_SHOW(buf, name) text_escape (buf, sizeof buf, name, strlen (name))

/* libarchive read callback: the next run of bytes of the layer below. */
static la_ssize_t
scan_read (struct archive *a, void *opaque, const void **out)
{
  struct scan *s = opaque;
  uint64_t left;
  size_t n;
  int r;

  *out = s->buf;
  if (s->pos >= s->lower->size)
    return 0;
  left = s->lower->size - s->pos;
  n = left < s->chunk ? (size_t) left : s->chunk;
  if (s->bytes_read + n > s->limit)
    {
      if (s->bytes_read >= s->limit)
        {
          s->limit_hit = true;
          s->io_errno = EFBIG;
          snprintf (s->io_message, sizeof s->io_message,
                    "scan-limit reached");
          archive_set_error (a, EFBIG, "scan-limit reached");
          return -1;
        }
      n = (size_t) (s->limit - s->bytes_read);
    }
  if (s->since_header + n > SCAN_BETWEEN_HEADERS_MAX)
    {
      s->special_hit = true;
      s->io_errno = EFBIG;
      snprintf (s->io_message, sizeof s->io_message,
                "more than %d MiB of extension headers (pax, GNU) before "
                "one member; the archive is damaged or hostile",
                SCAN_BETWEEN_HEADERS_MAX >> 20);
      archive_set_error (a, EFBIG, "%s", s->io_message);
      return -1;
    }
  r = layer_pread (s->lower, s->buf, n, s->pos);
  if (r < 0)
    {
      s->io_errno = -r;
      snprintf (s->io_message, sizeof s->io_message, "%s", error_message ());
      archive_set_error (a, -r, "%s", s->io_message);
      return -1;
    }
  s->pos += n;
  s->bytes_read += n;
  s->since_header += n;
  if (s->chunk < SCAN_READ_MAX)
    s->chunk *= 2;
  return (la_ssize_t) n;
}

/* libarchive skip callback: move forward without reading. */
static la_int64_t
scan_skip (struct archive *a, void *opaque, la_int64_t request)
{
  struct scan *s = opaque;
  uint64_t left;

  if (request <= 0 || s->pos >= s->lower->size)
    return 0;
  left = s->lower->size - s->pos;
  if ((uint64_t) request > left)
    request = (la_int64_t) left;
  s->pos += (uint64_t) request;
  if ((uint64_t) request >= s->chunk)
    s->chunk = SCAN_READ_MIN;
  return request;
}

/* libarchive seek callback: move anywhere inside the layer below. */
static la_int64_t
scan_seek (struct archive *a, void *opaque, la_int64_t offset, int whence)
{
  struct scan *s = opaque;
  int64_t base;

  switch (whence)
    {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = (int64_t) s->pos; break;
    case SEEK_END: base = (int64_t) s->lower->size; break;
    default:
      archive_set_error (a, EINVAL, "bad seek");
      return ARCHIVE_FATAL;
    }
  if ((offset < 0 && base + offset < 0)
      || (offset > 0 && (uint64_t) offset > s->lower->size - (uint64_t) base))
    {
      archive_set_error (a, EINVAL, "seek outside the archive");
      return ARCHIVE_FATAL;
    }
  s->pos = (uint64_t) (base + offset);
  s->chunk = SCAN_READ_MIN;
  return (la_int64_t) s->pos;
}

/* "./a/b/" -> "a/b": leading "./" and "/" and trailing "/" are not part
 * of a member's identity. */
const char *
tar_name_trim (const char *name, size_t *len)
{
  size_t n;

  for (;;)
    {
      if (name[0] == '/')
        name++;
      else if (name[0] == '.' && name[1] == '/')
        name += 2;
      else
        break;
    }
  n = strlen (name);
  while (n > 0 && name[n - 1] == '/')
    n--;
  *len = n;
  return name;
}

/* Whether two member names are the same member. */
static bool
scan_same_name (const char *a, const char *b)
{
  size_t alen, blen;

  a = tar_name_trim (a, &alen);
  b = tar_name_trim (b, &blen);
  return alen == blen && memcmp (a, b, alen) == 0;
}

/* The entry's name as bytes to compare: UTF-8 when libarchive can give
 * it, else the raw header bytes. */
static const char *
scan_entry_name (struct archive_entry *e)
{
  const char *n = archive_entry_pathname_utf8 (e);

  return n ? n : archive_entry_pathname (e);
}

/* Turn a libarchive failure into our error, preferring the cause seen
 * in a callback (a failing layer below, the scan limit). */
static int
scan_fail (struct scan *s, struct archive *a, const char *what)
{
  const char *msg;

  if (s->limit_hit)
    return error_set (EFBIG,
                      "tar: %s: read %llu bytes of the archive "
                      "without finding the member (scan-limit); raise "
                      "scan-limit in the entry", s->source,
                      (unsigned long long) s->limit);
  if (s->io_errno)
    return error_set (s->io_errno, "tar: %s: %s: %s", s->source, what,
                      s->io_message);
  msg = archive_error_string (a);
  return error_set (EIO, "tar: %s: %s: %s at offset %llu", s->source, what,
                    msg ? msg : "damaged archive",
                    (unsigned long long) archive_filter_bytes (a, 0));
}

/* The size field of a raw tar header: octal, or GNU base-256 (first
 * byte 0x80).  UINT64_MAX when it is neither or does not fit. */
static uint64_t
scan_header_size (const unsigned char *h)
{
  const unsigned char *f = h + 124;
  uint64_t v = 0;
  int i;

  if (f[0] == 0x80)
    {
      for (i = 1; i < 12; i++)
        {
          if (v >> 56)
            return UINT64_MAX;
          v = v << 8 | f[i];
        }
      return v;
    }
  for (i = 0; i < 12 && f[i] == ' '; i++)
    ;
  for (; i < 12 && f[i] >= '0' && f[i] <= '7'; i++)
    v = v * 8 + (uint64_t) (f[i] - '0');
  return v;
}

/* When the header chain that failed (from s->next_header) holds a pax
 * extended header or a GNU long name or link claiming more than
 * SCAN_SPECIAL_MAX bytes, record a message saying so and return its
 * negative errno; else 0.  Only a few headers of the chain are looked
 * at: this explains a failure, it does not parse the archive. */
static int
scan_special_too_large (struct scan *s)
{
  static const struct { char type; const char *what; } kinds[] = {
    { 'x', "pax extended header" }, { 'g', "pax global header" },
    { 'L', "GNU long name" }, { 'K', "GNU long link name" },
  };
  unsigned char h[TAR_BLOCK];
  uint64_t at = s->next_header, size;
  unsigned step;
  size_t i;

  for (step = 0; step < 8; step++)
    {
      if (at > s->lower->size || s->lower->size - at < TAR_BLOCK
          || layer_pread (s->lower, h, sizeof h, at) < 0)
        break;
      s->bytes_read += sizeof h;
      size = scan_header_size (h);
      for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (h[156] == kinds[i].type)
          break;
      if (i == sizeof kinds / sizeof kinds[0])
        break;
      if (size > SCAN_SPECIAL_MAX)
        {
          char claims[32] = "a size that does not fit";

          if (size != UINT64_MAX)
            snprintf (claims, sizeof claims, "%llu bytes",
                      (unsigned long long) size);
          return error_set (EFBIG, "tar: %s: header at offset %llu: a %s "
                            "claiming %s, more than the %d MiB accepted; "
                            "the archive is damaged or hostile", s->source,
                            (unsigned long long) at, kinds[i].what, claims,
                            SCAN_SPECIAL_MAX >> 20);
        }
      /* A special header of a sane size: the next one follows it. */
      at += TAR_BLOCK + (size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
    }
  error_clear ();
  return 0;
}

/* The header block right before the data must be a tar header (good
 * checksum) for a member whose data is one run: this checks the
 * computed offset independently of libarchive, and refuses types
 * libarchive reads as files though their data is elsewhere or partial
 * (GNU multi-volume continuations 'M', and others). */
static int
scan_check_header (struct scan *s, const char *name, uint64_t data_offset)
{
  unsigned char h[TAR_BLOCK];
  unsigned long sum = 0, stored = 0;
  long ssum = 0;
  int r, i;

  r = layer_pread (s->lower, h, sizeof h, data_offset - TAR_BLOCK);
  if (r < 0)
    return error_prefix (r, "tar: %s: %s", s->source, name);
  s->bytes_read += sizeof h;
  for (i = 0; i < TAR_BLOCK; i++)
    {
      unsigned char c = i >= 148 && i < 156 ? ' ' : h[i];
      sum += c;
      ssum += (signed char) c;
    }
  /* The checksum field: octal digits, ended by NUL or space. */
  for (i = 148; i < 156 && h[i] == ' '; i++)
    ;
  for (; i < 156 && h[i] >= '0' && h[i] <= '7'; i++)
    stored = stored * 8 + (unsigned long) (h[i] - '0');
  if (stored != sum && (long) stored != ssum)
    return error_set (EIO, "tar: %s: %s: no header just before the data "
                      "offset %llu; this archive layout is not supported",
                      s->source, name, (unsigned long long) data_offset);
  switch (h[156])
    {
    case '0': case '\0': case '7': case '1':
      return 0;
    default:
      return error_set (ENOTSUP, "tar: %s: %s: member type '%c' does not "
                        "hold its data as one run (a multi-volume or "
                        "special member)", s->source, name,
                        h[156] >= 32 && h[156] < 127 ? h[156] : '?');
    }
}

/* Compare the first bytes of the member, as libarchive decodes them,
 * with the layer below at the computed data offset. */
static int
scan_verify (struct scan *s, struct archive *a, const char *name,
             uint64_t data_offset, uint64_t size)
{
  char direct[SCAN_VERIFY_BYTES], parsed[SCAN_VERIFY_BYTES];
  size_t n = size < SCAN_VERIFY_BYTES ? (size_t) size : SCAN_VERIFY_BYTES;
  la_ssize_t got;
  int r;

  if (n == 0)
    return 0;
  got = archive_read_data (a, parsed, n);
  if (got < 0)
    return scan_fail (s, a, name);
  if ((size_t) got != n)
    return error_set (EIO, "tar: %s: %s: archive is truncated inside the "
                      "member", s->source, name);
  r = layer_pread (s->lower, direct, n, data_offset);
  if (r < 0)
    return error_prefix (r, "tar: %s: %s", s->source, name);
  s->bytes_read += n;
  if (memcmp (direct, parsed, n) != 0)
    return error_set (EIO, "tar: %s: %s: the member's data is not stored "
                      "where its header ends (offset %llu); this archive "
                      "layout is not supported", s->source, name,
                      (unsigned long long) data_offset);
  return 0;
}

/* Check a found entry and work out where its data is.  Returns 0 and
 * fills out, 1 with *link set when it is a hard link to follow, or a
 * negative errno. */
static int
scan_found (struct scan *s, struct archive *a, struct archive_entry *e,
            const char *name, struct tar_member *out, char **link)
{
  mode_t type = archive_entry_filetype (e);
  const char *target = archive_entry_hardlink (e);
  uint64_t data_offset, header_offset, size;
  int64_t consumed;
  int r;

  if (target && (!archive_entry_size_is_set (e) || archive_entry_size (e) == 0))
    {
      *link = strdup (target);
      if (*link == NULL)
        return error_set (ENOMEM, "tar: %s: out of memory", s->source);
      return 1;
    }
  if (type == AE_IFDIR)
    return error_set (EISDIR, "tar: %s: %s is a directory; name a file "
                      "inside it", s->source, name);
  if (type == AE_IFLNK)
    {
      char shown[512];
      const char *to = archive_entry_symlink (e);

      return error_set (ELOOP, "tar: %s: %s is a symbolic link to '%s'; "
                        "name the target in `entry =`", s->source, name,
                        SCAN_SHOW (shown, to ? to : ""));
    }
  if (type != AE_IFREG && target == NULL)
    return error_set (EINVAL, "tar: %s: %s is not a regular file",
                      s->source, name);
  if (archive_entry_sparse_count (e) > 0)
    return error_set (ENOTSUP, "tar: %s: %s is stored sparse (tar --sparse); "
                      "its data is not one run of bytes; recreate the "
                      "archive without --sparse", s->source, name);
  if (!archive_entry_size_is_set (e) || archive_entry_size (e) < 0)
    return error_set (EIO, "tar: %s: %s: header has no size", s->source,
                      name);

  size = (uint64_t) archive_entry_size (e);
  consumed = archive_filter_bytes (a, 0);
  header_offset = (uint64_t) archive_read_header_position (a);
  if (consumed < 0)
    return error_set (EIO, "tar: %s: %s: cannot tell where the data starts",
                      s->source, name);
  data_offset = (uint64_t) consumed;
  if (data_offset % TAR_BLOCK != 0 || data_offset < header_offset + TAR_BLOCK)
    return error_set (EIO, "tar: %s: %s: unexpected data offset %llu "
                      "(header at %llu); this archive layout is not "
                      "supported", s->source, name,
                      (unsigned long long) data_offset,
                      (unsigned long long) header_offset);
  if (data_offset > s->lower->size || size > s->lower->size - data_offset)
    return error_set (EIO, "tar: %s: %s: archive is truncated: the member "
                      "needs %llu bytes from offset %llu, the archive has "
                      "%llu", s->source, name, (unsigned long long) size,
                      (unsigned long long) data_offset,
                      (unsigned long long) s->lower->size);
  r = scan_check_header (s, name, data_offset);
  if (r < 0)
    return r;
  r = scan_verify (s, a, name, data_offset, size);
  if (r < 0)
    return r;
  out->data_offset = data_offset;
  out->size = size;
  out->header_offset = header_offset;
  return 0;
}

/* Set up libarchive to read tar headers through the callbacks of s. */
static struct archive *
scan_archive_new (struct scan *s)
{
  struct archive *a = archive_read_new ();

  if (a == NULL)
    return NULL;
  if (archive_read_support_format_tar (a) != ARCHIVE_OK
      || archive_read_set_read_callback (a, scan_read) != ARCHIVE_OK
      || archive_read_set_skip_callback (a, scan_skip) != ARCHIVE_OK
      || archive_read_set_seek_callback (a, scan_seek) != ARCHIVE_OK
      || archive_read_set_callback_data (a, s) != ARCHIVE_OK)
    {
      archive_read_free (a);
      return NULL;
    }
  return a;
}

/* Remember where the header after entry e should start: after its
 * data, rounded up to a block (only to explain a failure there). */
static void
scan_note_next_header (struct scan *s, struct archive *a,
                       struct archive_entry *e)
{
  int64_t data = archive_filter_bytes (a, 0);
  int64_t size = archive_entry_size_is_set (e) ? archive_entry_size (e) : 0;

  if (data < 0 || size < 0 || size > INT64_MAX - data - TAR_BLOCK)
    s->next_header = UINT64_MAX;
  else
    s->next_header = ((uint64_t) (data + size) + TAR_BLOCK - 1)
                     / TAR_BLOCK * TAR_BLOCK;
}

/* One pass from the start of the archive looking for name.  Returns 0
 * (found, out filled), 1 (a hard link: *link is the target to look
 * for), 2 (not found: sug holds the closest names) or a negative
 * errno. */
static int
scan_pass (struct scan *s, const char *name, struct tar_suggest *sug,
           struct tar_member *out, char **link)
{
  struct archive *a;
  struct archive_entry *e;
  char what[64];
  int r;

  s->pos = 0;
  s->chunk = SCAN_READ_MIN;
  s->io_errno = 0;
  s->limit_hit = false;
  s->special_hit = false;
  s->since_header = 0;
  s->next_header = 0;
  SCAN_SHOW (s->shown, name);
  a = scan_archive_new (s);
  if (a == NULL)
    return error_set (ENOMEM, "tar: %s: cannot set up libarchive",
                      s->source);
  if (archive_read_open1 (a) != ARCHIVE_OK)
    {
      r = s->lower->size == 0
          ? error_set (EINVAL, "tar: %s: the archive is empty", s->source)
          : scan_fail (s, a, "not a tar archive");
      goto out;
    }
  for (;;)
    {
      const char *ename;

      r = archive_read_next_header (a, &e);
      if (r == ARCHIVE_EOF)
        {
          r = 2;
          break;
        }
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
        {
          r = scan_special_too_large (s);
          if (r < 0)
            break;
          if (out->headers == 0)
            snprintf (what, sizeof what, "first header");
          else
            snprintf (what, sizeof what, "header after member %llu",
                      (unsigned long long) out->headers);
          r = scan_fail (s, a, what);
          break;
        }
      out->headers++;
      s->since_header = 0;
      scan_note_next_header (s, a, e);
      ename = scan_entry_name (e);
      if (ename == NULL)
        continue;
      if (scan_same_name (ename, name))
        {
          r = scan_found (s, a, e, s->shown, out, link);
          break;
        }
      if (archive_entry_filetype (e) != AE_IFDIR)
        tar_suggest_add (sug, ename);
    }
 out:
  archive_read_free (a);
  return r;
}

/* Report a member that is not in the archive, with the closest names. */
static int
scan_not_found (struct scan *s, const char *name, const char *wanted,
                struct tar_suggest *sug, uint64_t headers)
{
  char close[768], shown[512];

  tar_suggest_format (sug, close, sizeof close);
  SCAN_SHOW (shown, name);
  if (strcmp (name, wanted) != 0)
    return error_set (ENOENT, "tar: %s: %s is a hard link to '%s', which "
                      "is not in the archive before it", s->source, shown,
                      s->shown);
  if (headers == 0)
    return error_set (ENOENT, "tar: %s: no member '%s': the archive is "
                      "empty", s->source, shown);
  return error_set (ENOENT, "tar: %s: no member '%s' among %llu members; "
                    "closest: %s", s->source, shown,
                    (unsigned long long) headers, close);
}

/* Find a member, following hard links to the member holding the data. */
int
tar_scan (struct layer *lower, const char *source, const char *name,
          uint64_t limit, struct tar_member *out)
{
  struct scan s = { .lower = lower, .source = source,
                    .limit = limit ? limit : TAR_DEFAULT_SCAN_LIMIT };
  char *wanted = NULL;
  unsigned links;
  int r = 0;

  memset (out, 0, sizeof *out);
  s.buf = malloc (SCAN_READ_MAX);
  wanted = strdup (name);
  if (s.buf == NULL || wanted == NULL)
    {
      r = error_set (ENOMEM, "tar: %s: out of memory", source);
      goto out;
    }
  for (links = 0;; links++)
    {
      struct tar_suggest *sug = tar_suggest_new (wanted);
      char *link = NULL;

      if (sug == NULL)
        {
          r = error_set (ENOMEM, "tar: %s: out of memory", source);
          goto out;
        }
      r = scan_pass (&s, wanted, sug, out, &link);
      if (r == 2)
        r = scan_not_found (&s, name, wanted, sug, out->headers);
      tar_suggest_free (sug);
      if (r != 1)
        break;
      free (wanted);
      wanted = link;
      if (links + 1 >= SCAN_MAX_LINKS)
        {
          r = error_set (ELOOP, "tar: %s: %s: too many hard links",
                         source, SCAN_SHOW (s.shown, name));
          break;
        }
    }
 out:
  out->bytes_read = s.bytes_read;
  free (wanted);
  free (s.buf);
  return r;
}
