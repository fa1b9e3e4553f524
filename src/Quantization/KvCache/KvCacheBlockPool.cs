using static System.FormattableString;

namespace Quantization;

/// <summary>
/// A thread-safe pool of fixed-size KV cache blocks shared by many concurrent sequences of one model: each
/// <see cref="Int8KvCache"/> rents blocks as it grows (nothing is copied) and returns them when disposed.
/// </summary>
/// <remarks>
/// <para>Blocks are created on first demand, up to <see cref="Capacity"/>, and reused afterwards; a block returned by one
/// sequence serves the next. Renting and returning take a short lock, once per block of tokens.</para>
/// <para>A cache that is never disposed does not keep its blocks' capacity for good: once the garbage collector finds it
/// unreachable, a finalizer gives the capacity back (the blocks themselves are discarded, not reused). Dispose caches
/// anyway: until the collector runs, their blocks count against <see cref="Capacity"/>.</para>
/// </remarks>
public sealed class KvCacheBlockPool
{
    private readonly Stack<KvCacheBlock> _free = new();
    private readonly Lock _lock = new();
    private int _created;
    private int _rented;

    /// <summary>Initializes a new instance of the <see cref="KvCacheBlockPool"/> class.</summary>
    /// <param name="options">The cache shape and scheme the blocks serve; caches with the same head count, head dim, block size and scheme kind can share the pool.</param>
    /// <param name="capacity">The most blocks the pool hands out at once (a block holds <see cref="KvCacheOptions.BlockTokens"/> tokens of one layer).</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is not positive.</exception>
    public KvCacheBlockPool(KvCacheOptions options, int capacity)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        Layout = KvCacheBlockLayout.From(options);
        Capacity = capacity;
        BlockBytes = new KvCacheBlock(Layout).Bytes;
    }

    /// <summary>Gets the most blocks the pool hands out at once.</summary>
    public int Capacity { get; }

    /// <summary>Gets the bytes of one block (int8 keys and values and their scales).</summary>
    public long BlockBytes { get; }

    /// <summary>Gets the blocks currently rented by caches.</summary>
    public int RentedBlocks
    {
        get
        {
            lock (_lock)
            {
                return _rented;
            }
        }
    }

    /// <summary>
    /// Gets the blocks the pool has created and not forfeited (rented or free); never more than <see cref="Capacity"/>.
    /// The blocks of a cache collected without being disposed are forfeited: its capacity returns to the pool, and new
    /// blocks are created in their place.
    /// </summary>
    public int CreatedBlocks
    {
        get
        {
            lock (_lock)
            {
                return _created;
            }
        }
    }

    internal KvCacheBlockLayout Layout { get; }

    /// <summary>Rents <paramref name="count"/> blocks at once, or none: a cache never holds a partial append's blocks.</summary>
    internal KvCacheBlock[] Rent(int count)
    {
        lock (_lock)
        {
            if (_rented + count > Capacity)
            {
                throw new InvalidOperationException(Invariant($"The KV cache block pool has {Capacity - _rented} free blocks of its capacity {Capacity}, but {count} are needed; dispose finished sequences or create a larger pool."));
            }

            KvCacheBlock[] blocks = new KvCacheBlock[count];
            for (int i = 0; i < count; i++)
            {
                if (!_free.TryPop(out KvCacheBlock? block))
                {
                    block = new KvCacheBlock(Layout);
                    _created++;
                }

                blocks[i] = block;
            }

            _rented += count;
            return blocks;
        }
    }

    /// <summary>
    /// Takes back the capacity of blocks that will never be returned (a cache collected without being disposed): they
    /// count neither as rented nor as created, and are not reused.
    /// </summary>
    internal void Forfeit(int count)
    {
        lock (_lock)
        {
            _rented -= count;
            _created -= count;
        }
    }

    /// <summary>Takes back blocks a cache no longer uses.</summary>
    internal void Return(IEnumerable<KvCacheBlock> blocks)
    {
        lock (_lock)
        {
            foreach (KvCacheBlock block in blocks)
            {
                _free.Push(block);
                _rented--;
            }
        }
    }
}
