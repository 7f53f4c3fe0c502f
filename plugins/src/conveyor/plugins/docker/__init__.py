"""The Docker stage kinds: ``build`` (an OCI image from the checkout) and
``push`` (the run's images to their registry), through the Docker SDK."""
