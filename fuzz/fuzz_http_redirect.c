/* Fuzz harness: one redirect taken at open (backends/http/handle.c's
 * http_redirect: https->http refused, credentials dropped on another
 * origin) and the URL redaction it logs with (http_redact_url,
 * text_redact_url).
 *
 * Input: 1 flag byte, then the entry's URL and the redirect target,
 * separated by a NUL. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http/internal.h"
#include "text.h"

/* Free what a request config may own after a redirect. */
static void
free_config (struct http_request_config *rc)
{
  free (rc->url);
  free (rc->display);
  free (rc->user);
  free (rc->password);
  free (rc->cookie);
  curl_slist_free_all (rc->headers);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct http_request_config rc = { 0 };
  char *copy, *target, *key = NULL, small[24];
  size_t first;

  if (size < 2)
    return 0;
  copy = malloc (size + 1);
  if (copy == NULL)
    return 0;
  memcpy (copy, data + 1, size - 1);
  copy[size - 1] = '\0';
  first = strlen (copy);
  target = first + 1 < size - 1 ? copy + first + 1 : copy + first;

  text_redact_url (copy, small, sizeof small);
  text_redact_url (target, small, 1);
  rc.entry_name = (char *) "fuzz.img";
  rc.url = strdup (copy);
  rc.credentials_on_redirect = data[0] & 1;
  if (data[0] & 2)
    {
      rc.user = strdup ("alice");
      rc.password = strdup ("secret");
    }
  if (data[0] & 4)
    rc.cookie = strdup ("session=abc");
  if (data[0] & 8)
    rc.headers = curl_slist_append (NULL, "X-Test: yes");
  if (rc.url && http_redact_url (rc.url, &key, &rc.display) == 0)
    {
      free (key);
      http_same_origin (rc.url, target);
      http_redirect (&rc, target);
    }
  free_config (&rc);
  free (copy);
  return 0;
}
