"""The pipelines composed from the stages, their selection stage and their result types."""
