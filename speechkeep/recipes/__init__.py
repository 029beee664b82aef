"""Recipes: end-to-end jobs built from the data -> model -> strategy -> train -> evaluate -> report pieces."""
