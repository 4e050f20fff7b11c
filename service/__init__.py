"""The imgmatch HTTP service: check API, reference management, review and catalog pages."""
