"""yarn_ext kernels inside other libraries' models: yarn_ext.integrations.transformers."""
