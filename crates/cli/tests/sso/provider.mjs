// A real OpenID Connect provider for Berth's single sign-on tests: panva's `oidc-provider` (the certified
// Node.js implementation), with its development login and consent pages (any password signs in as the
// account named in the "login" field).
//
// Configured by environment variables:
//   PORT          where to listen (the issuer is http://127.0.0.1:PORT)
//   CLIENT        JSON of the one client: {client_id, client_secret?, redirect_uris, id_token_signed_response_alg?}
//   ACCOUNTS      JSON: account id -> claims (email, email_verified, given_name, family_name, groups, ...)
//   KEY_ALG       the algorithm of the signing key generated at start (RS256 by default; ES256, PS256, ...):
//                 a new key, with a new kid, at every start, which is how the tests rotate keys.
// Prints "listening <issuer> <kid>" once it serves.
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';
import { randomUUID } from 'node:crypto';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const client = JSON.parse(process.env.CLIENT);
const accounts = JSON.parse(process.env.ACCOUNTS || '{}');
const alg = process.env.KEY_ALG || 'RS256';

const { privateKey } = await generateKeyPair(alg, { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: `${alg}-${randomUUID()}`, alg, use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: client.client_secret ? 'client_secret_basic' : 'none',
    id_token_signed_response_alg: alg,
    ...client,
  }],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['given_name', 'family_name', 'name'],
    groups: ['groups'],
  },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
  features: { devInteractions: { enabled: true } },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`listening ${issuer} ${jwk.kid}`));
