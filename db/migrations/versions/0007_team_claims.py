"""a team labels together: claims, assignments, the review queue, settings

Revision ID: 0007
Revises: 0006

- ``claims``: who holds an image they were handed to label (or review), until when; one holder per image, so
  two labelers pressing Next never get the same image (db/claims.py). A live claim also keeps the image's
  proposals from being made again under the person's feet.
- ``assignments``: an admin hands images to a person (by folder, category, status or ids); only they are
  handed them by the queue.
- ``images.saved_by`` / ``images.saved_at``: the save that waits for a reviewer's verdict (a Label-tab or API
  save, or an import asked to be reviewed); NULL for labels nobody needs to review (a plain import). Filled
  from the latest Label-tab save of each image on upgrade.
- ``settings``: the store's own settings (e.g. "fine-tune after every N saved images").
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'claims',
        sa.Column('image_id', IdType, nullable=False),
        sa.Column('user', sa.String(length=200), nullable=False),
        sa.Column('until', sa.DateTime(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('image_id'),
    )
    op.create_index('ix_claims_user', 'claims', ['user'])
    op.create_table(
        'assignments',
        sa.Column('image_id', IdType, nullable=False),
        sa.Column('user', sa.String(length=200), nullable=False),
        sa.Column('by', sa.String(length=200), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('image_id'),
    )
    op.create_index('ix_assignments_user', 'assignments', ['user'])
    op.create_table(
        'settings',
        sa.Column('key', sa.String(length=50), nullable=False),
        sa.Column('value', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('saved_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('saved_at', sa.DateTime(), nullable=True))
    op.create_index('ix_images_saved_at', 'images', ['saved_at'])
    # the save each done image waits on: its latest Label-tab save (imports wrote none, so they wait for nobody)
    op.execute("""
        UPDATE images SET
            saved_at = (SELECT MAX(r.saved_at) FROM reviews r WHERE r.image_id = images.id),
            saved_by = (SELECT r."user" FROM reviews r WHERE r.image_id = images.id
                        ORDER BY r.saved_at DESC, r.id DESC LIMIT 1)
        WHERE EXISTS (SELECT 1 FROM reviews r WHERE r.image_id = images.id)
    """)


def downgrade() -> None:
    op.drop_index('ix_images_saved_at', table_name='images')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('saved_at')
        batch_op.drop_column('saved_by')
    op.drop_table('settings')
    op.drop_index('ix_assignments_user', table_name='assignments')
    op.drop_table('assignments')
    op.drop_index('ix_claims_user', table_name='claims')
    op.drop_table('claims')
