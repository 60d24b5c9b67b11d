"""at most one active model version

Revision ID: 0008
Revises: 0007

A unique index over the active rows of ``model_versions`` alone (a partial index, on SQLite and PostgreSQL):
the database refuses a second active version, whoever writes it. Before it, every process of a ``torchrun``
fine-tune registered its own round-0 version as active, and a store could hold several. On upgrade, of the
versions marked active only the first (lowest id: the one the app found first) stays active.
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_bind().execute(
        sa.text("UPDATE model_versions SET is_active = :no WHERE is_active = :yes AND id > "
                "(SELECT MIN(id) FROM model_versions WHERE is_active = :yes)"), {"yes": True, "no": False})
    op.create_index('uq_model_versions_one_active', 'model_versions', ['is_active'], unique=True,
                    sqlite_where=sa.text('is_active'), postgresql_where=sa.text('is_active'))


def downgrade() -> None:
    op.drop_index('uq_model_versions_one_active', table_name='model_versions')
