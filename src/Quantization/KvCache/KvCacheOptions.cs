using static System.FormattableString;

namespace Quantization;

/// <summary>
/// The shape of a KV cache for one sequence of a decoder model: layers x KV heads x tokens x head dim, with the query
/// heads that share each KV head (grouped-query attention), a token limit and the int8 scheme.
/// </summary>
public sealed class KvCacheOptions
{
    /// <summary>Initializes a new instance of the <see cref="KvCacheOptions"/> class.</summary>
    /// <param name="layers">The decoder layers.</param>
    /// <param name="kvHeads">The key/value heads of a layer.</param>
    /// <param name="queryHeads">The query heads of a layer: a multiple of <paramref name="kvHeads"/>; query head i reads KV head i / (queryHeads / kvHeads).</param>
    /// <param name="headDim">The dimension of one head, at most 512 (the int8 dots stay exact in int32).</param>
    /// <param name="maxTokens">The most tokens a layer may hold.</param>
    /// <param name="scheme">The int8 scheme; <see cref="KvCacheScheme.DynamicPerTokenHead"/> when <see langword="null"/>. <see cref="FloatKvCache"/> ignores it.</param>
    /// <param name="blockTokens">
    /// The tokens of one pooled block (a multiple of the KIVI group size for <see cref="KvCacheSchemeKind.Kivi"/>); 64 by
    /// default. Larger blocks (256, say) speed up attention over long contexts, because each head's keys and values are
    /// read in longer contiguous runs, but they make appends slower and grow memory in coarser steps.
    /// </param>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive, the head dim exceeds 512, or the block size does not fit the scheme.</exception>
    /// <exception cref="ArgumentException">The query heads are not a multiple of the KV heads, or static scales do not have layers x KV heads x head dim elements.</exception>
    public KvCacheOptions(int layers, int kvHeads, int queryHeads, int headDim, int maxTokens, KvCacheScheme? scheme = null, int blockTokens = 64)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(queryHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(headDim, AttentionPrimitives.MaxHeadDim);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockTokens);
        if (queryHeads % kvHeads != 0)
        {
            throw new ArgumentException(Invariant($"{queryHeads} query heads cannot share {kvHeads} KV heads evenly; the query heads must be a multiple of the KV heads."), nameof(queryHeads));
        }

        scheme ??= KvCacheScheme.DynamicPerTokenHead;
        long channels = (long)layers * kvHeads * headDim;
        if (scheme.HasStaticKeys && scheme.KeyScales.Length != channels)
        {
            throw new ArgumentException(Invariant($"The static scheme has {scheme.KeyScales.Length} key scales but the cache has {layers} layers x {kvHeads} KV heads x {headDim} head dim = {channels} channels."), nameof(scheme));
        }

        if (scheme.Kind == KvCacheSchemeKind.Kivi && blockTokens % scheme.GroupSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(blockTokens), blockTokens, Invariant($"A block must hold whole key groups: a multiple of the KIVI group size {scheme.GroupSize}."));
        }

        Layers = layers;
        KvHeads = kvHeads;
        QueryHeads = queryHeads;
        HeadDim = headDim;
        MaxTokens = maxTokens;
        Scheme = scheme;
        BlockTokens = blockTokens;
    }

    /// <summary>Gets the decoder layers.</summary>
    public int Layers { get; }

    /// <summary>Gets the key/value heads of a layer.</summary>
    public int KvHeads { get; }

    /// <summary>Gets the query heads of a layer.</summary>
    public int QueryHeads { get; }

    /// <summary>Gets the query heads that share one KV head (the grouped-query-attention group size).</summary>
    public int QueryHeadsPerKvHead => QueryHeads / KvHeads;

    /// <summary>Gets the dimension of one head.</summary>
    public int HeadDim { get; }

    /// <summary>Gets the most tokens a layer may hold.</summary>
    public int MaxTokens { get; }

    /// <summary>Gets the int8 scheme.</summary>
    public KvCacheScheme Scheme { get; }

    /// <summary>Gets the tokens of one pooled block.</summary>
    public int BlockTokens { get; }

    /// <summary>Gets the floats of one token of one layer in an append: KV heads x head dim.</summary>
    public int TokenWidth => KvHeads * HeadDim;
}
