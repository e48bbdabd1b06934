/* diskshelf: small, tested text helpers shared by the parsers.
 *
 * Thread model: all functions are pure or touch only their arguments.
 */
#ifndef DISKSHELF_TEXT_H
#define DISKSHELF_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Strip leading and trailing white space in place; returns the start. */
char *text_trim (char *s);

/* Parse a whole decimal number strictly (no sign, no junk, no overflow).
 * Returns 0 or -EINVAL / -ERANGE. */
int text_parse_uint (const char *s, uint64_t *out);

/* Split a command line into words, honouring '…', "…" and backslash
 * escapes.  *out is a malloc'd NULL-ended array of malloc'd words (the
 * caller frees each and the array).  Returns the word count, -EINVAL for
 * unbalanced quotes, -ENOMEM. */
int text_split_words (const char *line, char ***out);

/* Levenshtein distance, for "did you mean" hints (capped at 255). */
unsigned text_edit_distance (const char *a, const char *b);

/* Copy a URL into buf (truncated to size) with any "user:password@"
 * replaced by "***@" and the value of every secret-looking query
 * parameter (X-Amz-Signature, Signature, sig, token, access_token,
 * X-Goog-Signature, ...key..., ...password...) by "***", so that
 * secrets never reach logs or status.  The result is at most 3 bytes
 * longer than url (values shorter than "***" become as many stars). */
void text_redact_url (const char *url, char *buf, size_t size);

/* A malloc'd copy of url redacted as text_redact_url does (the caller
 * frees it); NULL when out of memory. */
char *text_redacted_copy (const char *url);

/* Copy n bytes of untrusted text (a header value from a server) into
 * dst, dstlen bytes, always NUL-terminated and truncated to fit: bytes
 * outside printable ASCII, and the backslash, become \xNN, so a peer
 * cannot forge log lines or send terminal escapes.  Returns dst. */
char *text_escape (char *dst, size_t dstlen, const char *src, size_t n);

#endif
