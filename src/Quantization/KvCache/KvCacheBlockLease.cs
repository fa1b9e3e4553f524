namespace Quantization;

/// <summary>
/// One cache's account with a <see cref="KvCacheBlockPool"/>: it counts the blocks the cache holds, and holds no
/// reference back to the cache, so that when a cache is dropped without <see cref="Int8KvCache.Dispose"/> its lease is
/// finalized and gives the pool back the capacity those blocks took.
/// </summary>
/// <remarks>
/// The finalizer forfeits the blocks (<see cref="KvCacheBlockPool.Forfeit"/>) instead of returning them for reuse: it
/// cannot know that no thread is still inside a method of the dropped cache writing them, so they are left to the
/// garbage collector and the pool creates new ones. <see cref="Dispose()"/> (called by the cache's Dispose, once it has
/// returned its blocks) suppresses the finalizer.
/// </remarks>
internal sealed class KvCacheBlockLease : IDisposable
{
    private readonly KvCacheBlockPool _pool;
    private int _blocks;

    /// <summary>Initializes a new instance of the <see cref="KvCacheBlockLease"/> class.</summary>
    /// <param name="pool">The pool the cache rents from.</param>
    public KvCacheBlockLease(KvCacheBlockPool pool) => _pool = pool;

    /// <summary>Finalizes an instance of the <see cref="KvCacheBlockLease"/> class: the dropped cache's blocks no longer count against the pool.</summary>
    ~KvCacheBlockLease() => Dispose(disposing: false);

    /// <summary>Rents <paramref name="count"/> blocks at once, or none (see <see cref="KvCacheBlockPool.Rent"/>).</summary>
    /// <param name="count">The number of blocks.</param>
    /// <returns>The blocks.</returns>
    public KvCacheBlock[] Rent(int count)
    {
        KvCacheBlock[] blocks = _pool.Rent(count);
        _blocks += count;
        return blocks;
    }

    /// <summary>Gives blocks back to the pool for reuse.</summary>
    /// <param name="blocks">Blocks rented through this lease.</param>
    public void Return(IReadOnlyCollection<KvCacheBlock> blocks)
    {
        _pool.Return(blocks);
        _blocks -= blocks.Count;
    }

    /// <summary>Ends the lease once the cache has returned its blocks: nothing is left for the finalizer.</summary>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>From the finalizer (<paramref name="disposing"/> false), forfeits the blocks the dropped cache still held.</summary>
    private void Dispose(bool disposing)
    {
        if (!disposing && _blocks > 0)
        {
            _pool.Forfeit(_blocks);
        }
    }
}
