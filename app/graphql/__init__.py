"""The GraphQL layer: the generated schema, its resolvers and Context, limits, persisted queries and compiled execution.

The only package that imports Strawberry or graphql-core (besides the HTTP app that serves it)."""
