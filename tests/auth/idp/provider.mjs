// A real OpenID Provider for SMCP's upstream-login tests: panva's oidc-provider (OpenID
// Certified), not a hand-written fake, so the tests meet discovery, JWKS, PKCE, nonce,
// RFC 9207 `iss`, client authentication and ID tokens exactly as a production IdP sends them.
//
// Configuration is one JSON object in IDP_CONFIG:
//   clients   oidc-provider client metadata (client_id, client_secret, redirect_uris, ...)
//   accounts  { accountId: { email, email_verified, name, ... } }
//   jwks      optional private JWKS; two instances given the same keys sign alike
//             (tests use that to make a token that verifies but names another issuer)
//   conformIdTokenClaims  optional (default true: email/profile only via userinfo)
//   port      optional fixed port (a test that must name the issuer before starting it)
//
// It listens on 127.0.0.1 (on a random port unless given one) and prints one JSON line,
// {"issuer", "port"}.
//
// Interactions are automatic, so a test can drive the whole flow with a plain HTTP client:
// GET /interaction/<uid>?account=<id> signs that account in (default: the first account)
// and consents to everything asked; ?deny=1 ends the flow with error=access_denied.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.IDP_CONFIG || '{}');
const accounts = config.accounts || {};
const firstAccount = Object.keys(accounts)[0];

function signingKeys() {
  if (config.jwks) return config.jwks;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `k-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' }] };
}

const server = http.createServer();
await new Promise((resolve) => server.listen(config.port || 0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients || [],
  jwks: signingKeys(),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  conformIdTokenClaims: config.conformIdTokenClaims ?? true,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const account = accounts[sub];
    if (!account) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...account }) };
  },
  // Tests want errors in the response body, not an HTML page with a stack trace.
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

provider.use(async (ctx, next) => {
  const match = /^\/interaction\/([^/]+)$/.exec(ctx.path);
  if (!match || ctx.method !== 'GET') return next();
  const { prompt, params, session, grantId } = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (ctx.query.deny) {
    result = { error: 'access_denied', error_description: 'the user declined at the identity provider' };
  } else if (prompt.name === 'login') {
    const accountId = ctx.query.account || firstAccount;
    if (!accounts[accountId]) ctx.throw(400, `no account ${accountId}`);
    result = { login: { accountId } };
  } else if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { details } = prompt;
    if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
    result = { consent: { grantId: await grant.save() } };
  } else {
    ctx.throw(501, `prompt ${prompt.name} not handled`);
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: !!result.consent });
  ctx.status = 303;
  ctx.redirect(returnTo);
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
