"""reviews: one row per save of an image's labels

Revision ID: 0003
Revises: 0002

What the labeler did to the proposals shown (accepted unchanged or edited, rejected, drawn, assisted,
keypoints moved, mask IoU proposal -> saved) and the active seconds spent, so the model view can show per
model version whether the last fine-tune paid off. Stores made before it have no rows: the measures start
with the first save after the upgrade.
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'reviews',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('image_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('model_version_id', sa.Integer(), nullable=True),
        sa.Column('user', sa.String(length=200), nullable=False),
        sa.Column('opened_at', sa.DateTime(), nullable=False),
        sa.Column('saved_at', sa.DateTime(), nullable=False),
        sa.Column('active_seconds', sa.Float(), nullable=False),
        *(sa.Column(c, sa.Integer(), nullable=False) for c in (
            'actions', 'proposals', 'accepted_unchanged', 'accepted_edited', 'rejected', 'drawn', 'assisted',
            'keypoints_moved')),
        sa.Column('iou_sum', sa.Float(), nullable=False),
        sa.Column('iou_count', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviews_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reviews_model_version_id'), ['model_version_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviews_model_version_id'))
        batch_op.drop_index(batch_op.f('ix_reviews_image_id'))
    op.drop_table('reviews')
