namespace Quantization;

/// <summary>
/// One pooled block: <see cref="KvCacheOptions.BlockTokens"/> tokens of one layer, every KV head. Values are
/// [KV heads, block tokens, head dim] and keys [KV heads, head dim / 2, block tokens, 2] (channel pairs, see
/// <see cref="AttentionPrimitives.KeyScores"/>), so that one head's tokens are contiguous for attention; the scales follow the scheme.
/// </summary>
internal sealed class KvCacheBlock
{
    public KvCacheBlock(in KvCacheBlockLayout layout)
    {
        Keys = new sbyte[layout.KvHeads * layout.Tokens * AttentionPrimitives.PaddedDim(layout.HeadDim)];
        Values = new sbyte[layout.KvHeads * layout.Tokens * layout.HeadDim];
        KeyScales = new float[layout.KeyScaleCount];
        ValueScales = new float[layout.ValueScaleCount];
    }

    /// <summary>Gets the int8 keys, [KV heads, head dim / 2 (rounded up), tokens, 2].</summary>
    public sbyte[] Keys { get; }

    /// <summary>Gets the int8 values, [KV heads, tokens, head dim].</summary>
    public sbyte[] Values { get; }

    /// <summary>Gets the key scales: [KV heads, tokens] per token, [KV heads, groups, head dim] for KIVI, none for static.</summary>
    public float[] KeyScales { get; }

    /// <summary>Gets the value scales: [KV heads, tokens], none for static.</summary>
    public float[] ValueScales { get; }

    /// <summary>Gets the bytes the block holds.</summary>
    public long Bytes => Keys.Length + Values.Length + (4L * (KeyScales.Length + ValueScales.Length));
}

/// <summary>The sizes of a block, from the options: caches may share a pool only when these agree.</summary>
internal readonly record struct KvCacheBlockLayout(int KvHeads, int HeadDim, int Tokens, int KeyScaleCount, int ValueScaleCount)
{
    public static KvCacheBlockLayout From(KvCacheOptions options)
    {
        int tokens = options.BlockTokens, heads = options.KvHeads;
        (int keyScales, int valueScales) = options.Scheme.Kind switch
        {
            KvCacheSchemeKind.DynamicPerTokenHead => (heads * tokens, heads * tokens),
            KvCacheSchemeKind.StaticKeysPerChannel => (0, heads * tokens),
            KvCacheSchemeKind.Kivi => (heads * (tokens / options.Scheme.GroupSize) * options.HeadDim, heads * tokens),
            _ => (0, 0),
        };
        return new(heads, options.HeadDim, tokens, keyScales, valueScales);
    }
}
