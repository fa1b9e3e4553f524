namespace Quantization;

/// <summary>
/// The quantization scheme of an <see cref="Int8KvCache"/>: create one with <see cref="StaticPerChannel"/>,
/// <see cref="StaticKeysPerChannel"/>, <see cref="DynamicPerTokenHead"/> or <see cref="Kivi"/>. Every scheme is symmetric int8 with ONNX Runtime's
/// arithmetic (<c>scale = max |x| / 127</c>, divide, round half to even), and never re-quantizes stored tokens.
/// </summary>
public sealed class KvCacheScheme
{
    private readonly float[] _keyScales;
    private readonly float[] _valueScales;

    private KvCacheScheme(KvCacheSchemeKind kind, float[] keyScales, float[] valueScales, int groupSize, int residentTokens)
    {
        Kind = kind;
        _keyScales = keyScales;
        _valueScales = valueScales;
        GroupSize = groupSize;
        ResidentTokens = residentTokens;
    }

    /// <summary>Gets the dynamic per-token, per-head scheme: each token's key and value rows of each KV head get the scale <c>max |x| / 127</c> when appended.</summary>
    public static KvCacheScheme DynamicPerTokenHead { get; } = new(KvCacheSchemeKind.DynamicPerTokenHead, [], [], 0, 0);

    /// <summary>Gets the kind of scheme.</summary>
    public KvCacheSchemeKind Kind { get; }

    /// <summary>Gets the static key scales, [layers, KV heads, head dim]; empty for the dynamic and KIVI schemes.</summary>
    public ReadOnlySpan<float> KeyScales => _keyScales;

    /// <summary>Gets the static value scales, [layers, KV heads, head dim]; empty for the schemes other than <see cref="StaticPerChannel"/>.</summary>
    public ReadOnlySpan<float> ValueScales => _valueScales;

    /// <summary>Gets a value indicating whether keys have static per-channel scales (<see cref="KeyScales"/>).</summary>
    internal bool HasStaticKeys => Kind is KvCacheSchemeKind.StaticPerChannel or KvCacheSchemeKind.StaticKeysPerChannel;

    /// <summary>Gets a value indicating whether values have static per-channel scales (<see cref="ValueScales"/>); otherwise each token and KV head has its own value scale.</summary>
    internal bool HasStaticValues => Kind == KvCacheSchemeKind.StaticPerChannel;

    /// <summary>Gets the KIVI key group size G: keys share a per-channel scale over G consecutive tokens; 0 for the other schemes.</summary>
    public int GroupSize { get; }

    /// <summary>Gets the KIVI window R: up to R most recent tokens stay in float, quantized together when the window fills; 0 for the other schemes.</summary>
    public int ResidentTokens { get; }

    /// <summary>
    /// Creates the static per-channel scheme from calibrated scales (for example from <see cref="KvCacheCalibrator"/>).
    /// Keys and values outside the calibrated range saturate at the int8 limits (-128 and 127) instead of failing.
    /// </summary>
    /// <param name="keyScales">The key scales, [layers, KV heads, head dim]: finite and positive.</param>
    /// <param name="valueScales">The value scales, in the same layout.</param>
    /// <returns>The scheme; <see cref="KvCacheOptions"/> checks the scales' length against the cache's shape.</returns>
    /// <exception cref="ArgumentException">The spans' lengths differ or are zero.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is not finite and positive.</exception>
    public static KvCacheScheme StaticPerChannel(ReadOnlySpan<float> keyScales, ReadOnlySpan<float> valueScales)
    {
        if (keyScales.IsEmpty || keyScales.Length != valueScales.Length)
        {
            throw new ArgumentException(FormattableString.Invariant($"There are {keyScales.Length} key scales and {valueScales.Length} value scales; both need layers x KV heads x head dim (> 0) scales."), nameof(valueScales));
        }

        for (int i = 0; i < keyScales.Length; i++)
        {
            QuantizationPrimitives.ValidateScale(keyScales[i], allowZero: false, nameof(keyScales), i);
            QuantizationPrimitives.ValidateScale(valueScales[i], allowZero: false, nameof(valueScales), i);
        }

        return new(KvCacheSchemeKind.StaticPerChannel, keyScales.ToArray(), valueScales.ToArray(), 0, 0);
    }

    /// <summary>
    /// Creates the scheme of static per-channel key scales (for example from <see cref="KvCacheCalibrator"/>) and dynamic
    /// per-token, per-head values: keys keep their outlier channels apart without per-token scales, and each value row
    /// gets the scale <c>max |x| / 127</c> when appended (one float per token and KV head). Keys outside the calibrated
    /// range saturate at the int8 limits (-128 and 127) instead of failing.
    /// </summary>
    /// <param name="keyScales">The key scales, [layers, KV heads, head dim]: finite and positive.</param>
    /// <returns>The scheme; <see cref="KvCacheOptions"/> checks the scales' length against the cache's shape.</returns>
    /// <exception cref="ArgumentException">The span is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is not finite and positive.</exception>
    public static KvCacheScheme StaticKeysPerChannel(ReadOnlySpan<float> keyScales)
    {
        if (keyScales.IsEmpty)
        {
            throw new ArgumentException("There are no key scales; the scheme needs layers x KV heads x head dim (> 0) scales.", nameof(keyScales));
        }

        for (int i = 0; i < keyScales.Length; i++)
        {
            QuantizationPrimitives.ValidateScale(keyScales[i], allowZero: false, nameof(keyScales), i);
        }

        return new(KvCacheSchemeKind.StaticKeysPerChannel, keyScales.ToArray(), [], 0, 0);
    }

    /// <summary>
    /// Creates a KIVI-style scheme: keys are quantized per channel over groups of <paramref name="groupSize"/> tokens
    /// (outlier channels keep their own scale), values per token and KV head, and the most recent tokens stay in float
    /// until <paramref name="residentTokens"/> of them have gathered; then all of them are quantized at once.
    /// </summary>
    /// <param name="groupSize">G, the tokens that share a key channel scale (for example 32).</param>
    /// <param name="residentTokens">R, the float window; a positive multiple of <paramref name="groupSize"/> (for example 128).</param>
    /// <returns>The scheme.</returns>
    /// <exception cref="ArgumentOutOfRangeException">G is not positive, or R is not a positive multiple of G.</exception>
    public static KvCacheScheme Kivi(int groupSize = 32, int residentTokens = 128)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(groupSize);
        if (residentTokens <= 0 || residentTokens % groupSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(residentTokens), residentTokens, FormattableString.Invariant($"The float window must be a positive multiple of the group size {groupSize}."));
        }

        return new(KvCacheSchemeKind.Kivi, [], [], groupSize, residentTokens);
    }

    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        KvCacheSchemeKind.Kivi => FormattableString.Invariant($"Kivi(G: {GroupSize}, R: {ResidentTokens})"),
        _ => Kind.ToString(),
    };
}
