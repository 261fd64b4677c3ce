"""The tunnelled EVerest interfaces: one table, an agent half and a controller half."""
