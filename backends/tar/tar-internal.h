/* diskshelf: private header of the tar member layer (backends/tar/).
 *
 * tar.c is the layer: a read-only window onto the layer below.
 * scan.c finds the member with libarchive, reading only headers through
 * read/skip/seek callbacks over the layer below, and works out where the
 * member's data starts in that layer.
 * suggest.c ranks the archive's member names by closeness to a name that
 * was not found, for the error message.
 *
 * Thread model: tar_scan runs once, in the constructor, on one thread.
 * The suggestion set is used by one thread.  Nothing here is shared.
 */
#ifndef DISKSHELF_TAR_INTERNAL_H
#define DISKSHELF_TAR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "layer.h"

/* Bytes of archive read while looking for a member when the entry sets
 * no scan-limit.  Skipped member data does not count. */
#define TAR_DEFAULT_SCAN_LIMIT (256ULL * 1024 * 1024)

/* Where a member lives in the layer below, and what finding it cost. */
struct tar_member
{
  uint64_t data_offset;     /* first data byte, in the layer below */
  uint64_t size;            /* bytes of data, stored contiguously */
  uint64_t header_offset;   /* first header block of the member */
  uint64_t bytes_read;      /* read from the layer below while scanning */
  uint64_t headers;         /* members looked at */
};

/* Find member `name` in the tar archive that `lower` holds.  source
 * names the archive in messages; limit bounds the bytes read (0 = the
 * default).  Returns 0 and *out, or a negative errno with a message
 * recorded (not found lists the closest names; sparse, directory,
 * symbolic link, damaged and truncated archives each say so). */
int tar_scan (struct layer *lower, const char *source, const char *name,
              uint64_t limit, struct tar_member *out);

/* "./a//b/" -> "a//b": what is compared when looking for a member.
 * Returns a pointer into name and the length to compare in *len. */
const char *tar_name_trim (const char *name, size_t *len);

/* The closest names seen so far to a wanted one.
 * Ownership: tar_suggest_new returns a set freed by tar_suggest_free. */
struct tar_suggest;

struct tar_suggest *tar_suggest_new (const char *wanted);
void tar_suggest_free (struct tar_suggest *s);

/* Consider one member name (copied when kept). */
void tar_suggest_add (struct tar_suggest *s, const char *name);

/* Write "'a', 'b'" (the best few, best first) into buf, always
 * NUL-terminated; "" when no name was added. */
void tar_suggest_format (const struct tar_suggest *s, char *buf,
                         size_t size);

#endif
