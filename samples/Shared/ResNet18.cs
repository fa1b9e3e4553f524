using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

using SkiaSharp;

namespace Quantization.Samples;

/// <summary>
/// ResNet-18 as ML.NET ships it (an ONNX feature extractor: 224 × 224 RGB in, 512 features out, opset 8) with its
/// preprocessing model, and the photos this repository ships to run it on.
/// </summary>
public static class ResNet18
{
    /// <summary>The model's input: [1, 3, 224, 224], preprocessed.</summary>
    public const string InputName = "Input247";

    /// <summary>The model's output: [1, 512, 1, 1] features.</summary>
    public const string OutputName = "Pooling395_Output_0";

    private const int Side = 224;

    /// <summary>Gets the feature extractor's file.</summary>
    public static string ModelPath => Path.Combine(AppContext.BaseDirectory, "models", "ResNet18.onnx");

    /// <summary>Gets the preprocessing model's file (RGB 0-255 in, the feature extractor's input out).</summary>
    public static string PreprocessModelPath => Path.Combine(AppContext.BaseDirectory, "models", "ResNetPreprocess.onnx");

    /// <summary>Gets the shipped photos, in name order.</summary>
    public static IReadOnlyList<string> PhotoPaths => [.. Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "data", "photos"), "*.jpg").Order(StringComparer.Ordinal)];

    /// <summary>Decodes the photos, centre-crops them to 224 × 224 and runs the preprocessing model on them.</summary>
    /// <returns>One input for the feature extractor per photo, [1, 3, 224, 224].</returns>
    public static float[][] LoadInputs()
    {
        using InferenceSession preprocess = new(PreprocessModelPath);
        return [.. PhotoPaths.Select(path =>
        {
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> output = preprocess.Run([NamedOnnxValue.CreateFromTensor("OriginalInput", new DenseTensor<float>(LoadPhoto(path), [1, 3, Side, Side]))]);
            return output[0].AsTensor<float>().ToArray();
        })];
    }

    /// <summary>Makes the feed of one input for <see cref="InferenceSession.Run(IReadOnlyCollection{NamedOnnxValue})"/>.</summary>
    /// <param name="input">An input from <see cref="LoadInputs"/>.</param>
    /// <returns>The feed.</returns>
    public static IReadOnlyCollection<NamedOnnxValue> Feed(float[] input) =>
        [NamedOnnxValue.CreateFromTensor(InputName, new DenseTensor<float>(input, [1, 3, Side, Side]))];

    /// <summary>Runs a feature extractor on every input.</summary>
    /// <param name="session">A session of the float or a quantized model.</param>
    /// <param name="inputs">Inputs from <see cref="LoadInputs"/>.</param>
    /// <returns>512 features per input.</returns>
    public static float[][] Features(InferenceSession session, IEnumerable<float[]> inputs) =>
        [.. inputs.Select(input =>
        {
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> output = session.Run(Feed(input));
            return output[0].AsTensor<float>().ToArray();
        })];

    /// <summary>Decodes a photo, scales its shorter side to 256, centre-crops 224 × 224 and returns RGB planes of 0-255 values.</summary>
    private static float[] LoadPhoto(string path)
    {
        using SKImage image = SKImage.FromEncodedData(path) ?? throw new InvalidDataException($"'{path}' is not an image SkiaSharp can decode.");
        float sourceSide = Side * Math.Min(image.Width, image.Height) / 256f;
        SKRect source = SKRect.Create((image.Width - sourceSide) / 2, (image.Height - sourceSide) / 2, sourceSide, sourceSide);
        using SKBitmap bitmap = new(new SKImageInfo(Side, Side, SKColorType.Rgba8888, SKAlphaType.Opaque));
        using (SKCanvas canvas = new(bitmap))
        {
            canvas.DrawImage(image, source, SKRect.Create(0, 0, Side, Side), new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.Linear));
        }

        ReadOnlySpan<byte> rgba = bitmap.GetPixelSpan();
        float[] planes = new float[3 * Side * Side];
        for (int i = 0; i < Side * Side; i++)
        {
            planes[i] = rgba[4 * i];
            planes[(Side * Side) + i] = rgba[(4 * i) + 1];
            planes[(2 * Side * Side) + i] = rgba[(4 * i) + 2];
        }

        return planes;
    }
}
