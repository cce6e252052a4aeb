/*
 * passwd.h - password storage with a slow KDF (OpenSSL EVP_KDF scrypt,
 * N=2^15 r=8 p=1, 16-byte random salt). Encoded form:
 *   $scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>
 * Verification compares in constant time.
 */
#ifndef PETREL_PASSWD_H
#define PETREL_PASSWD_H

/* passwd_hash - malloc'd encoded hash of pw */
char *passwd_hash(const char *pw);
/* passwd_verify - 0 when pw matches encoded, -1 otherwise (incl. malformed) */
int passwd_verify(const char *pw, const char *encoded);

#endif
