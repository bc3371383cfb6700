/**
 * The interface aliases that mark the links ctnet made, so reconcile can tell them from everyone
 * else's and find the record each belongs to.
 */
export const networkAlias = (id: string) => `ctnet:net:${id}`;
export const endpointAlias = (id: string) => `ctnet:ep:${id}`;
