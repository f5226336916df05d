"""Bundle plumbing shared by both bundles: checkpoints that carry the recipe of the network they hold, and the
``monai.bundle run`` command lines the scripts start."""

from .commands import bundle_run_command, run_logged

from .recipe import (
    CheckedCheckpointLoader,
    CheckpointMismatchError,
    RecipeError,
    RecipeMismatchError,
    RecipeSaver,
    check_recipe,
    describe_mismatch,
    mismatch_error,
    read_recipe,
    recipe_path,
    write_recipe,
)
