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

/* Copy a URL into buf with any "user:password@" replaced by "***@", so
 * that secrets never reach logs or status. */
void text_redact_url (const char *url, char *buf, size_t size);

#endif
